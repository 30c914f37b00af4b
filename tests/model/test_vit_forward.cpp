// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "vit_test_util.hpp"
#include "vitcompress/model/vit_forward.hpp"

using vitc::Index;
using vitc::Tensor;
namespace model = vitc::model;

namespace {

// The ViT written out with plain loops and explicit indices, straight from the definition
// (timm VisionTransformer with per-block q/k and v head dims): the independent reference.
std::vector<double> naive_logits(const model::ViTWeights<double>& w, const Tensor<double, 4>& x,
                                 Index b) {
  const auto& c = w.config;
  const Index d = c.embed_dim, p = c.patch_size, g = c.grid_size(), t = c.num_tokens();
  const double eps = c.layer_norm_eps;
  std::vector<std::vector<double>> tok(static_cast<std::size_t>(t), std::vector<double>(d));
  for (Index j = 0; j < d; ++j) tok[0][j] = w.cls_token(0, 0, j) + w.pos_embed(0, 0, j);
  for (Index py = 0; py < g; ++py)
    for (Index px = 0; px < g; ++px)
      for (Index o = 0; o < d; ++o) {
        double s = w.patch_embed.bias(o);
        for (Index ci = 0; ci < c.in_channels; ++ci)
          for (Index ky = 0; ky < p; ++ky)
            for (Index kx = 0; kx < p; ++kx)
              s += w.patch_embed.weight(o, ci, ky, kx) * x(b, ci, py * p + ky, px * p + kx);
        tok[static_cast<std::size_t>(1 + py * g + px)][o] = s + w.pos_embed(0, 1 + py * g + px, o);
      }
  const auto layer_norm = [&](const std::vector<double>& v,
                              const model::LayerNormWeights<double>& n) {
    double mean = 0, var = 0;
    for (double e : v) mean += e;
    mean /= static_cast<double>(v.size());
    for (double e : v) var += (e - mean) * (e - mean);
    var /= static_cast<double>(v.size());
    std::vector<double> out(v.size());
    for (std::size_t j = 0; j < v.size(); ++j)
      out[j] = (v[j] - mean) / std::sqrt(var + eps) * n.weight(static_cast<Index>(j)) +
               n.bias(static_cast<Index>(j));
    return out;
  };
  const auto linear = [](const std::vector<double>& v, const model::LinearWeights<double>& l) {
    std::vector<double> out(static_cast<std::size_t>(l.weight.extent(0)));
    for (Index o = 0; o < l.weight.extent(0); ++o) {
      double s = l.bias(o);
      for (Index i = 0; i < l.weight.extent(1); ++i)
        s += l.weight(o, i) * v[static_cast<std::size_t>(i)];
      out[static_cast<std::size_t>(o)] = s;
    }
    return out;
  };
  for (std::size_t l = 0; l < w.blocks.size(); ++l) {
    const auto& bw = w.blocks[l];
    const auto& bc = c.blocks[l];
    const Index h_n = bc.num_heads, dqk = bc.qk_head_dim, dv = bc.v_head_dim;
    std::vector<std::vector<double>> qkv;
    for (const auto& v : tok) qkv.push_back(linear(layer_norm(v, bw.norm1), bw.qkv));
    std::vector<std::vector<double>> heads(static_cast<std::size_t>(t),
                                           std::vector<double>(static_cast<std::size_t>(h_n * dv)));
    for (Index h = 0; h < h_n; ++h)
      for (Index i = 0; i < t; ++i) {
        std::vector<double> s(static_cast<std::size_t>(t));
        double mx = -1e300;
        for (Index j = 0; j < t; ++j) {
          double dot = 0;
          for (Index e = 0; e < dqk; ++e)
            dot += qkv[i][h * dqk + e] * qkv[j][h_n * dqk + h * dqk + e];
          s[j] = dot / std::sqrt(static_cast<double>(dqk));
          mx = std::max(mx, s[j]);
        }
        double z = 0;
        for (double& e : s) z += (e = std::exp(e - mx));
        for (Index e = 0; e < dv; ++e) {
          double acc = 0;
          for (Index j = 0; j < t; ++j) acc += s[j] / z * qkv[j][2 * h_n * dqk + h * dv + e];
          heads[i][h * dv + e] = acc;
        }
      }
    for (Index i = 0; i < t; ++i) {
      const auto a = linear(heads[i], bw.proj);
      for (Index j = 0; j < d; ++j) tok[i][j] += a[j];
      auto hdn = linear(layer_norm(tok[i], bw.norm2), bw.fc1);
      for (double& e : hdn) e = 0.5 * e * (1 + std::erf(e / std::sqrt(2.0)));
      const auto m = linear(hdn, bw.fc2);
      for (Index j = 0; j < d; ++j) tok[i][j] += m[j];
    }
  }
  return linear(layer_norm(tok[0], w.norm), w.head);
}

}  // namespace

TEST_SUITE("model") {
  TEST_CASE("vit_forward equals a naive loop implementation (double, uneven blocks)") {
    const auto cfg = vitc::test::tiny_config();
    const auto w = vitc::test::nontrivial_weights<double>(cfg, 21);
    const auto x = vitc::test::random_images<double>(cfg, 3, 22);
    model::ViTWorkspace<double> ws;
    const auto logits = model::vit_logits(w, x.view(), ws);
    for (Index b = 0; b < 3; ++b) {
      const auto ref = naive_logits(w, x, b);
      for (Index k = 0; k < cfg.num_classes; ++k) {
        CAPTURE(b);
        CAPTURE(k);
        CHECK(logits(b, k) == doctest::Approx(ref[static_cast<std::size_t>(k)]).epsilon(1e-12));
      }
    }
  }

  TEST_CASE("a batch of two equals two batches of one; training and inference passes agree") {
    const auto cfg = vitc::test::tiny_config();
    const auto w = vitc::test::nontrivial_weights<float>(cfg, 1);
    const auto x = vitc::test::random_images<float>(cfg, 2, 2);
    model::ViTWorkspace<float> ws;
    const auto both = model::vit_logits(w, x.view(), ws);
    Tensor<float, 2> train({2, cfg.num_classes});
    model::vit_forward(w, x.view(), train.view(), ws, nullptr, model::Pass::kTraining);
    for (Index b = 0; b < 2; ++b) {
      const auto one = model::vit_logits(w, x.view().slice(0, b, b + 1), ws);
      for (Index k = 0; k < cfg.num_classes; ++k) {
        CHECK(one(0, k) == doctest::Approx(both(b, k)).epsilon(1e-5));
        CHECK(train(b, k) == doctest::Approx(both(b, k)).epsilon(1e-5));
      }
    }
  }

  TEST_CASE("one and two threads give identical logits") {
    vitc::ThreadPool pool(2);
    for (const auto& cfg : {vitc::test::tiny_config(), model::ViTConfig::fashion_mnist_vit()}) {
      const auto w = vitc::test::nontrivial_weights<float>(cfg, 3);
      const auto x = vitc::test::random_images<float>(cfg, 5, 4);
      model::ViTWorkspace<float> ws1, ws2;
      const auto a = model::vit_logits(w, x.view(), ws1);
      const auto b = model::vit_logits(w, x.view(), ws2, &pool);
      for (Index i = 0; i < a.size(); ++i) CHECK(a.data()[i] == b.data()[i]);
    }
  }

  TEST_CASE("strided images give the same logits as contiguous ones") {
    const auto cfg = vitc::test::tiny_config();
    const auto w = vitc::test::nontrivial_weights<float>(cfg, 8);
    const auto x = vitc::test::random_images<float>(cfg, 2, 9);
    // Store the images as [W, H, C, B] and view them back permuted to [B, C, H, W].
    Tensor<float, 4> t({8, 8, 2, 2});
    auto tv = t.view().permute({3, 2, 1, 0});
    vitc::copy_view(x.view(), tv);
    model::ViTWorkspace<float> ws;
    const auto a = model::vit_logits(w, x.view(), ws);
    const auto b = model::vit_logits(w, vitc::TensorView<const float, 4>(tv), ws);
    for (Index i = 0; i < a.size(); ++i) CHECK(a.data()[i] == b.data()[i]);
  }

  TEST_CASE("the workspace allocates only when the batch grows") {
    const auto cfg = model::ViTConfig::fashion_mnist_vit();
    const auto w = model::ViTWeights<float>::random(cfg, 1);
    model::ViTWorkspace<float> ws;
    const auto x4 = vitc::test::random_images<float>(cfg, 4, 1);
    const auto x2 = vitc::test::random_images<float>(cfg, 2, 1);
    (void)model::vit_logits(w, x4.view(), ws);
    const auto bytes = ws.bytes();
    CHECK(bytes > 0);
    (void)model::vit_logits(w, x2.view(), ws);
    (void)model::vit_logits(w, x4.view(), ws);
    CHECK(ws.bytes() == bytes);
    CHECK(ws.batch() == 4);
    CHECK_FALSE(ws.has_activations());
    Tensor<float, 2> logits({4, 10});
    model::vit_forward(w, x4.view(), logits.view(), ws, nullptr, model::Pass::kTraining);
    CHECK(ws.has_activations());
    CHECK(ws.bytes() > bytes);
    ws.release();
    CHECK(ws.bytes() == 0);
  }

  TEST_CASE("forward rejects inputs of the wrong shape, naming them") {
    const auto cfg = vitc::test::tiny_config();
    const auto w = vitc::test::nontrivial_weights<float>(cfg, 1);
    model::ViTWorkspace<float> ws;
    Tensor<float, 4> bad({2, 3, 8, 8});
    Tensor<float, 2> logits({2, 3});
    CHECK_THROWS_WITH_AS(model::vit_forward(w, bad.view(), logits.view(), ws),
                         doctest::Contains("images"), vitc::ShapeError);
    Tensor<float, 4> empty({0, 2, 8, 8});
    Tensor<float, 2> no_logits({0, 3});
    CHECK_THROWS_AS(model::vit_forward(w, empty.view(), no_logits.view(), ws), vitc::ShapeError);
    const auto x = vitc::test::random_images<float>(cfg, 2, 1);
    Tensor<float, 2> wrong({2, 4});
    CHECK_THROWS_WITH_AS(model::vit_forward(w, x.view(), wrong.view(), ws),
                         doctest::Contains("logits"), vitc::ShapeError);
    auto broken = w;
    broken.blocks[1].fc1.weight = Tensor<float, 2>({5, 8});
    CHECK_THROWS_WITH_AS(model::vit_forward(broken, x.view(), logits.view(), ws),
                         doctest::Contains("blocks.1.mlp.fc1.weight"), vitc::ShapeError);
  }
}
