// SPDX-License-Identifier: Apache-2.0
// Calibration statistics of a ViT are true means over batches / samples, and score_groups turns
// them into the estimators' values.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <span>
#include <vector>

#include "../model/vit_test_util.hpp"
#include "vitcompress/model/loss.hpp"
#include "vitcompress/model/vit_backward.hpp"
#include "vitcompress/prune/score_groups.hpp"
#include "vitcompress/prune/vit_calibration.hpp"
#include "vitcompress/prune/vit_graph.hpp"
#include "vitcompress/prune/vit_pruner.hpp"

using namespace vitc::prune;
using vitc::Index;
using vitc::Tensor;
namespace model = vitc::model;

namespace {

model::ViTWeights<double> gradient_of(const model::ViTWeights<double>& w,
                                      vitc::TensorView<const double, 4> x,
                                      vitc::TensorView<const std::int32_t, 1> y) {
  model::ViTWorkspace<double> ws;
  Tensor<double, 2> z({x.extent(0), w.config.num_classes}), gz({x.extent(0), w.config.num_classes});
  model::vit_forward(w, x, z.view(), ws, nullptr, model::Pass::kTraining);
  (void)model::softmax_cross_entropy(z.cview(), y, 0.0, gz.view());
  model::ViTWeights<double> g;
  model::vit_backward(w, ws, gz.cview(), g);
  return g;
}

struct Data {
  Tensor<double, 4> images;
  Tensor<std::int32_t, 1> labels;
};

Data data(const model::ViTConfig& c, Index n, std::uint64_t seed) {
  Data d{vitc::test::random_images<double>(c, n, seed), Tensor<std::int32_t, 1>({n})};
  for (Index i = 0; i < n; ++i)
    d.labels(i) = static_cast<std::int32_t>((i * 7 + seed) % c.num_classes);
  return d;
}

}  // namespace

TEST_SUITE("prune") {
  TEST_CASE(
      "mean_gradient averages the batch gradients; fisher_diagonal the squared per-sample "
      "gradients") {
    const auto c = vitc::test::tiny_config();
    const auto w = vitc::test::nontrivial_weights<double>(c, 5);
    const Data a = data(c, 3, 1), b = data(c, 2, 2);
    const std::vector<CalibrationBatch<double>> batches{{a.images.cview(), a.labels.cview()},
                                                        {b.images.cview(), b.labels.cview()}};
    Index calls = 0;
    const auto mg = mean_gradient<double>(w, batches, nullptr, [&](Index, Index) { ++calls; });
    CHECK(calls == 2);
    const auto ga = gradient_of(w, a.images.cview(), a.labels.cview());
    const auto gb = gradient_of(w, b.images.cview(), b.labels.cview());
    const auto pm = mg.parameters();
    const auto pa = ga.parameters(), pb = gb.parameters();
    for (std::size_t i = 0; i < pm.size(); ++i)
      for (std::size_t j = 0; j < pm[i].values.size(); j += 7)
        CHECK(pm[i].values[j] == doctest::Approx(0.5 * (pa[i].values[j] + pb[i].values[j])));

    const auto fd = fisher_diagonal<double>(w, batches);
    std::vector<model::ViTWeights<double>> per_sample;
    for (const Data* d : {&a, &b})
      for (Index s = 0; s < d->images.extent(0); ++s)
        per_sample.push_back(gradient_of(w, d->images.cview().slice(0, s, s + 1),
                                         d->labels.cview().slice(0, s, s + 1)));
    const auto pf = fd.parameters();
    for (std::size_t i = 0; i < pf.size(); ++i)
      for (std::size_t j = 0; j < pf[i].values.size(); j += 5) {
        double mean = 0;
        for (const auto& g : per_sample) mean += std::pow(g.parameters()[i].values[j], 2);
        mean /= static_cast<double>(per_sample.size());
        CHECK(pf[i].values[j] == doctest::Approx(mean));
      }
  }

  TEST_CASE(
      "hutchinson_diagonal: deterministic, weights untouched, close to the exact diagonal "
      "on average") {
    const auto c = vitc::test::tiny_config();
    const auto w = vitc::test::nontrivial_weights<double>(c, 8);
    const auto saved = w;
    const Data a = data(c, 4, 3);
    const std::vector<CalibrationBatch<double>> batches{{a.images.cview(), a.labels.cview()}};
    Index passes = 0;
    const auto h1 =
        hutchinson_diagonal<double>(w, batches, 2, 1e-4, 17, nullptr, [&](Index done, Index total) {
          CHECK(total == 4);
          passes = done;
        });
    CHECK(passes == 4);
    const auto h2 = hutchinson_diagonal<double>(w, batches, 2, 1e-4, 17);
    CHECK(h1.head.weight(1, 2) == h2.head.weight(1, 2));
    CHECK(w.blocks[0].qkv.weight(0, 0) == saved.blocks[0].qkv.weight(0, 0));
    // One probe is v ⊙ (∇L(w + εv) − ∇L(w − εv)) / 2ε for the Rademacher v drawn from the seed
    // (one bit per element, parameters in table order, 64 bits per draw): recompute it here from
    // independent gradients. Convergence of the estimator itself is pinned on a quadratic in the
    // importance tests; on a whole ViT single probes are too noisy (their variance is the sum of
    // squared off-diagonal Hessian entries) for a unit test to see the mean.
    const double eps = 1e-4;
    const auto one = hutchinson_diagonal<double>(w, batches, 1, eps, 99);
    std::mt19937_64 rng(99);
    auto wp = w, wm = w, v = w;
    std::uint64_t bits = 0;
    int left = 0;
    auto pv = v.parameters(), pp = wp.parameters(), pm = wm.parameters();
    for (std::size_t i = 0; i < pv.size(); ++i)
      for (std::size_t j = 0; j < pv[i].values.size(); ++j) {
        if (left == 0) {
          bits = rng();
          left = 64;
        }
        pv[i].values[j] = (bits & 1) ? 1.0 : -1.0;
        bits >>= 1;
        --left;
        pp[i].values[j] += eps * pv[i].values[j];
        pm[i].values[j] -= eps * pv[i].values[j];
      }
    const auto gp = gradient_of(wp, a.images.cview(), a.labels.cview());
    const auto gm = gradient_of(wm, a.images.cview(), a.labels.cview());
    const auto po = one.parameters();
    const auto qp = gp.parameters(), qm = gm.parameters();
    for (std::size_t i = 0; i < po.size(); ++i)
      for (std::size_t j = 0; j < po[i].values.size(); j += 3) {
        const double want = pv[i].values[j] * (qp[i].values[j] - qm[i].values[j]) / (2 * eps);
        CHECK(po[i].values[j] == doctest::Approx(want).epsilon(1e-6).scale(1e-6));
      }
  }

  TEST_CASE("score_groups: Taylor and Fisher scores of an MLP unit, by hand") {
    const auto c = vitc::test::tiny_config();
    const auto w = vitc::test::nontrivial_weights<double>(c, 4);
    const auto s = vitc::test::nontrivial_weights<double>(c, 6);  // any statistic
    const ViTGraph g = vit_graph(c);
    const auto wt = param_tensors(w), st = param_tensors(s);
    const int mlp = g.graph.find_group("blocks.1.mlp.hidden");
    const auto taylor = score_groups<double>(
        g.graph, wt, st, ScoreSpec{Estimator::kTaylor, Reduction::kSum, Normalization::kNone});
    const auto fisher = score_groups<double>(
        g.graph, wt, st,
        ScoreSpec{Estimator::kHessianFisher, Reduction::kSum, Normalization::kNone});
    const auto l1 = score_groups<double>(
        g.graph, wt, st, ScoreSpec{Estimator::kL1, Reduction::kMean, Normalization::kNone});
    for (Index u : {0, 3, 5}) {
      double t = 0, f = 0, a = 0, b = 0;
      const auto& fc1 = w.blocks[1].fc1.weight;
      const auto& fc2 = w.blocks[1].fc2.weight;
      for (Index k = 0; k < c.embed_dim; ++k) {
        t += fc1(u, k) * s.blocks[1].fc1.weight(u, k) + fc2(k, u) * s.blocks[1].fc2.weight(k, u);
        f += 0.5 * (fc1(u, k) * fc1(u, k) * std::max(0.0, s.blocks[1].fc1.weight(u, k)) +
                    fc2(k, u) * fc2(k, u) * std::max(0.0, s.blocks[1].fc2.weight(k, u)));
        a += std::abs(fc1(u, k));
        b += std::abs(fc2(k, u));
      }
      CHECK(taylor[static_cast<std::size_t>(mlp)][static_cast<std::size_t>(u)] ==
            doctest::Approx(std::abs(t)));
      CHECK(fisher[static_cast<std::size_t>(mlp)][static_cast<std::size_t>(u)] ==
            doctest::Approx(f));
      CHECK(l1[static_cast<std::size_t>(mlp)][static_cast<std::size_t>(u)] ==
            doctest::Approx((a + b) / 2));  // biases not scored: two members
    }
    // A missing statistic, or one of the wrong shape, is named.
    CHECK_THROWS_WITH_AS(score_groups<double>(g.graph, wt, {}, ScoreSpec{Estimator::kTaylor}),
                         doctest::Contains("no tensor named"), vitc::ArgumentError);
    auto other = param_tensors(s);
    other[4].shape = {1, 2};
    CHECK_THROWS_AS(score_groups<double>(g.graph, wt, other, ScoreSpec{Estimator::kTaylor}),
                    vitc::ShapeError);
  }
}
