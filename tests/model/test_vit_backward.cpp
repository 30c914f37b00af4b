// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "vit_test_util.hpp"
#include "vitcompress/model/loss.hpp"
#include "vitcompress/model/vit_backward.hpp"
#include "vitcompress/model/vit_forward.hpp"

using vitc::Index;
using vitc::Tensor;
using vitc::TensorView;
namespace model = vitc::model;

namespace {

// A differentiable hook: scales every hooked tensor by a per-site factor in forward and the
// gradient by the same factor in backward, which is exact calculus for y = a * x. If the plumbing
// (sites, in-place semantics, the saved pre-hook probabilities) is right, the gradients of the
// hooked model match its finite differences like the plain model's.
struct ScaleHooks {
  static constexpr bool kEnabled = true;
  std::vector<int> forward_calls = std::vector<int>(model::kNumHookSites, 0);
  std::vector<int> backward_calls = std::vector<int>(model::kNumHookSites, 0);
  static double factor(model::HookSite s) { return 1.0 + 0.05 * (static_cast<int>(s) + 1); }
  void forward(model::HookSite s, int, TensorView<double, 2> x) {
    ++forward_calls[static_cast<std::size_t>(s)];
    for (Index r = 0; r < x.extent(0); ++r)
      for (Index c = 0; c < x.extent(1); ++c) x(r, c) *= factor(s);
  }
  void backward(model::HookSite s, int, TensorView<const double, 2> x, TensorView<double, 2> g) {
    ++backward_calls[static_cast<std::size_t>(s)];
    CHECK(x.shape() == g.shape());
    for (Index r = 0; r < g.extent(0); ++r)
      for (Index c = 0; c < g.extent(1); ++c) g(r, c) *= factor(s);
  }
};
static_assert(model::ActivationHooks<ScaleHooks, double>);
static_assert(model::ActivationHooks<model::NoHooks, float>);

// Loss = mean cross-entropy with label smoothing, or <G, logits> for a fixed upstream gradient G.
struct Objective {
  std::vector<std::int32_t> labels;
  double smoothing = 0.0;
  const Tensor<double, 2>* upstream = nullptr;

  TensorView<const std::int32_t, 1> label_view() const {
    return {labels.data(), {static_cast<Index>(labels.size())}};
  }
  double value(const Tensor<double, 2>& logits) const {
    if (upstream == nullptr) {
      const auto stats = model::softmax_cross_entropy(logits.cview(), label_view(), smoothing);
      return stats.loss_sum / static_cast<double>(stats.rows);
    }
    double s = 0.0;
    for (Index i = 0; i < logits.size(); ++i) s += upstream->data()[i] * logits.data()[i];
    return s;
  }
  void gradient(const Tensor<double, 2>& logits, Tensor<double, 2>& g) const {
    if (upstream == nullptr)
      (void)model::softmax_cross_entropy(logits.cview(), label_view(), smoothing, g.view());
    else
      g = *upstream;
  }
};

template <class Hooks>
double loss_at(const model::ViTWeights<double>& w, const Tensor<double, 4>& x, const Objective& obj,
               model::ViTWorkspace<double>& ws, Hooks& hooks) {
  Tensor<double, 2> logits({x.extent(0), w.config.num_classes});
  model::vit_forward(w, x.view(), logits.view(), ws, nullptr, model::Pass::kInference, hooks);
  return obj.value(logits);
}

// Up to `count` spread, deterministic entries of a tensor of n elements.
std::vector<std::size_t> sample_indices(std::size_t n, std::size_t count) {
  std::vector<std::size_t> idx;
  if (n <= count) {
    for (std::size_t i = 0; i < n; ++i) idx.push_back(i);
    return idx;
  }
  idx.push_back(0);
  idx.push_back(n - 1);
  std::uint64_t s = 0x9e3779b97f4a7c15ULL ^ n;
  while (idx.size() < count) {
    s = s * 6364136223846793005ULL + 1442695040888963407ULL;
    idx.push_back(static_cast<std::size_t>((s >> 33) % n));
  }
  return idx;
}

// Relative error of an analytic derivative against a central difference, robust near zero: the
// denominator is floored at 1e-3 of the tensor's largest analytic gradient.
double rel_error(double analytic, double numeric, double scale) {
  return std::abs(analytic - numeric) / std::max({std::abs(numeric), 1e-3 * scale, 1e-12});
}

template <class Hooks>
void gradient_check(const Objective& obj, Hooks& hooks, double tol) {
  const auto cfg = vitc::test::tiny_config();
  auto w = vitc::test::nontrivial_weights<double>(cfg, 7);
  auto x = vitc::test::random_images<double>(cfg, 2, 11);
  model::ViTWorkspace<double> ws;

  Tensor<double, 2> logits({2, cfg.num_classes}), g({2, cfg.num_classes});
  model::vit_forward(w, x.view(), logits.view(), ws, nullptr, model::Pass::kTraining, hooks);
  obj.gradient(logits, g);
  model::ViTWeights<double> grads;
  Tensor<double, 4> gx(x.shape());
  model::vit_backward(w, ws, g.view(), grads, model::GradMode::kOverwrite, nullptr, gx.view(),
                      hooks);

  const double h = 1e-5;
  model::ViTWorkspace<double> ws_fd;
  auto params = w.parameters();
  auto gparams = grads.parameters();
  REQUIRE(params.size() == gparams.size());
  double worst = 0.0;
  for (std::size_t p = 0; p < params.size(); ++p) {
    CAPTURE(params[p].name);
    REQUIRE(gparams[p].name == params[p].name);
    double scale = 0.0;
    for (double v : gparams[p].values) scale = std::max(scale, std::abs(v));
    CHECK(scale > 0.0);  // every parameter influences the loss
    for (std::size_t i : sample_indices(params[p].values.size(), 6)) {
      double& v = params[p].values[i];
      const double saved = v;
      v = saved + h;
      const double up = loss_at(w, x, obj, ws_fd, hooks);
      v = saved - h;
      const double down = loss_at(w, x, obj, ws_fd, hooks);
      v = saved;
      const double numeric = (up - down) / (2 * h);
      const double err = rel_error(gparams[p].values[i], numeric, scale);
      CAPTURE(i);
      CAPTURE(numeric);
      CAPTURE(gparams[p].values[i]);
      CHECK(err < tol);
      worst = std::max(worst, err);
    }
  }
  double scale = 0.0;
  for (double v : gx.span()) scale = std::max(scale, std::abs(v));
  for (std::size_t i : sample_indices(static_cast<std::size_t>(x.size()), 24)) {
    double& v = x.data()[i];
    const double saved = v;
    v = saved + h;
    const double up = loss_at(w, x, obj, ws_fd, hooks);
    v = saved - h;
    const double down = loss_at(w, x, obj, ws_fd, hooks);
    v = saved;
    const double numeric = (up - down) / (2 * h);
    CAPTURE(i);
    CHECK(rel_error(gx.data()[i], numeric, scale) < tol);
    worst = std::max(worst, rel_error(gx.data()[i], numeric, scale));
  }
  MESSAGE("worst relative error " << worst);
}

// One training-mode forward, the mean cross-entropy, one backward; returns the mean loss.
template <class T>
double loss_and_gradients(const model::ViTWeights<T>& w, const Tensor<T, 4>& x,
                          const std::vector<std::int32_t>& labels, model::ViTWeights<T>& grads,
                          model::ViTWorkspace<T>& ws, vitc::ThreadPool* pool = nullptr,
                          model::GradMode mode = model::GradMode::kOverwrite) {
  const Index batch = x.extent(0);
  Tensor<T, 2> logits({batch, w.config.num_classes}), g({batch, w.config.num_classes});
  model::vit_forward(w, x.view(), logits.view(), ws, pool, model::Pass::kTraining);
  const auto stats = model::softmax_cross_entropy(
      logits.cview(), TensorView<const std::int32_t, 1>(labels.data(), {batch}), 0.0, g.view());
  model::vit_backward(w, ws, g.cview(), grads, mode, pool);
  return stats.loss_sum / static_cast<double>(batch);
}

}  // namespace

TEST_SUITE("model") {
  TEST_CASE("vit_backward matches central finite differences (double, uneven blocks)") {
    model::NoHooks none;
    SUBCASE("mean cross-entropy") {
      Objective obj{{2, 0}, 0.0, nullptr};
      gradient_check(obj, none, 1e-6);
    }
    SUBCASE("cross-entropy with label smoothing 0.1") {
      Objective obj{{1, 2}, 0.1, nullptr};
      gradient_check(obj, none, 1e-6);
    }
    SUBCASE("arbitrary upstream gradient on the logits") {
      Tensor<double, 2> up({2, 3});
      const double vals[] = {0.3, -1.2, 0.7, 2.0, 0.1, -0.5};
      for (int i = 0; i < 6; ++i) up.data()[i] = vals[i];
      Objective obj{{}, 0.0, &up};
      gradient_check(obj, none, 1e-6);
    }
  }

  TEST_CASE("activation hooks see every site and their gradients are exact") {
    ScaleHooks hooks;
    Objective obj{{0, 1}, 0.0, nullptr};
    gradient_check(obj, hooks, 1e-6);
    const int depth = 2;
    for (int s = 0; s < model::kNumHookSites; ++s) {
      CAPTURE(model::to_string(static_cast<model::HookSite>(s)));
      CHECK(hooks.forward_calls[static_cast<std::size_t>(s)] > 0);
      CHECK(hooks.backward_calls[static_cast<std::size_t>(s)] > 0);
    }
    // One backward call per site per pass: sites inside blocks once per block.
    CHECK(hooks.backward_calls[static_cast<std::size_t>(model::HookSite::kQuery)] == depth);
    CHECK(hooks.backward_calls[static_cast<std::size_t>(model::HookSite::kHeadInput)] == 1);
  }

  TEST_CASE("accumulate mode adds, overwrite mode replaces") {
    const auto cfg = vitc::test::tiny_config();
    auto w = vitc::test::nontrivial_weights<double>(cfg, 3);
    auto x = vitc::test::random_images<double>(cfg, 2, 4);
    const std::vector<std::int32_t> labels{0, 2};
    model::ViTWorkspace<double> ws;
    model::ViTWeights<double> once, twice;
    loss_and_gradients(w, x, labels, once, ws);
    loss_and_gradients(w, x, labels, twice, ws);
    loss_and_gradients(w, x, labels, twice, ws, nullptr, model::GradMode::kAccumulate);
    auto a = once.parameters();
    auto b = twice.parameters();
    for (std::size_t p = 0; p < a.size(); ++p)
      for (std::size_t i = 0; i < a[p].values.size(); ++i)
        CHECK(b[p].values[i] == doctest::Approx(2 * a[p].values[i]).epsilon(1e-12));
    loss_and_gradients(w, x, labels, twice, ws);
    b = twice.parameters();
    for (std::size_t p = 0; p < a.size(); ++p)
      for (std::size_t i = 0; i < a[p].values.size(); ++i) CHECK(b[p].values[i] == a[p].values[i]);
  }

  TEST_CASE("backward with two threads equals one thread") {
    const auto cfg = vitc::test::tiny_config();
    auto w = vitc::test::nontrivial_weights<float>(cfg, 5);
    auto x = vitc::test::random_images<float>(cfg, 6, 6);
    const std::vector<std::int32_t> labels{0, 1, 2, 2, 1, 0};
    vitc::ThreadPool pool(2);
    model::ViTWorkspace<float> ws1, ws2;
    model::ViTWeights<float> g1, g2;
    const double l1 = loss_and_gradients(w, x, labels, g1, ws1);
    const double l2 = loss_and_gradients(w, x, labels, g2, ws2, &pool);
    CHECK(l1 == l2);
    auto a = g1.parameters();
    auto b = g2.parameters();
    for (std::size_t p = 0; p < a.size(); ++p) {
      CAPTURE(a[p].name);
      float scale = 0;
      for (float v : a[p].values) scale = std::max(scale, std::abs(v));
      for (std::size_t i = 0; i < a[p].values.size(); ++i)
        CHECK(std::abs(a[p].values[i] - b[p].values[i]) <= 1e-6f * scale);
    }
  }

  TEST_CASE("backward rejects a workspace without training activations and bad shapes") {
    const auto cfg = vitc::test::tiny_config();
    auto w = vitc::test::nontrivial_weights<float>(cfg, 5);
    auto x = vitc::test::random_images<float>(cfg, 2, 6);
    model::ViTWorkspace<float> ws;
    Tensor<float, 2> logits({2, 3}), g({2, 3});
    model::ViTWeights<float> grads;
    CHECK_THROWS_AS(model::vit_backward(w, ws, g.view(), grads), vitc::ArgumentError);
    model::vit_forward(w, x.view(), logits.view(), ws);  // inference: nothing kept
    CHECK_THROWS_AS(model::vit_backward(w, ws, g.view(), grads), vitc::ArgumentError);
    model::vit_forward(w, x.view(), logits.view(), ws, nullptr, model::Pass::kTraining);
    Tensor<float, 2> wrong({3, 3});
    CHECK_THROWS_WITH_AS(model::vit_backward(w, ws, wrong.view(), grads),
                         doctest::Contains("grad_logits"), vitc::ShapeError);
    model::ViTWeights<float> other(vitc::model::ViTConfig::fashion_mnist_vit());
    CHECK_THROWS_WITH_AS(model::vit_backward(w, ws, g.view(), other), doctest::Contains("grads"),
                         vitc::ShapeError);
    Tensor<float, 4> gx({2, 2, 8, 7});
    CHECK_THROWS_WITH_AS(model::vit_backward(w, ws, g.view(), grads, model::GradMode::kOverwrite,
                                             nullptr, gx.view()),
                         doctest::Contains("grad_images"), vitc::ShapeError);
    model::vit_backward(w, ws, g.view(), grads);
    CHECK(grads.size() == cfg.parameter_count());
  }
}
