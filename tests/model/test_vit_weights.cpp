// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include "vit_test_util.hpp"
#include "vitcompress/model/vit_weights.hpp"

using vitc::Index;
using vitc::Tensor;
namespace model = vitc::model;

TEST_SUITE("model") {
  TEST_CASE("parameters are listed under timm names in state_dict order") {
    const auto cfg = vitc::test::tiny_config();
    model::ViTWeights<float> w(cfg);
    const auto params = w.parameters();
    REQUIRE(params.size() == 4 + 12 * 2 + 4);
    CHECK(params[0].name == "cls_token");
    CHECK(params[1].name == "pos_embed");
    CHECK(params[1].shape == std::vector<Index>{1, 5, 8});
    CHECK(params[2].name == "patch_embed.proj.weight");
    CHECK(params[2].shape == std::vector<Index>{8, 2, 4, 4});
    CHECK(params[4].name == "blocks.0.norm1.weight");
    CHECK(params[6].name == "blocks.0.attn.qkv.weight");
    CHECK(params[6].shape == std::vector<Index>{2 * 2 * 3 + 2 * 4, 8});
    CHECK(params[8].name == "blocks.0.attn.proj.weight");
    CHECK(params[8].shape == std::vector<Index>{8, 8});
    CHECK(params[12].name == "blocks.0.mlp.fc1.weight");
    CHECK(params[12].shape == std::vector<Index>{10, 8});
    CHECK(params[16 + 4].name == "blocks.1.attn.proj.weight");
    CHECK(params[16 + 4].shape == std::vector<Index>{8, 9});
    CHECK(params[params.size() - 2].name == "head.weight");
    CHECK(params.back().name == "head.bias");
    std::int64_t total = 0;
    for (const auto& p : params) total += static_cast<std::int64_t>(p.values.size());
    CHECK(total == cfg.parameter_count());
    CHECK(w.size() == cfg.parameter_count());
    // for_each visits the same tensors with their ranks.
    std::size_t k = 0;
    w.for_each([&](const std::string& name, auto view) {
      CHECK(name == params[k].name);
      CHECK(static_cast<std::size_t>(view.kRank) == params[k].shape.size());
      CHECK(view.data() == params[k].values.data());
      ++k;
    });
    CHECK(k == params.size());
  }

  TEST_CASE("random init is deterministic and has timm's statistics") {
    const auto cfg = model::ViTConfig::fashion_mnist_vit();
    const auto a = model::ViTWeights<float>::random(cfg, 42);
    const auto b = model::ViTWeights<float>::random(cfg, 42);
    const auto c = model::ViTWeights<float>::random(cfg, 43);
    const auto pa = a.parameters(), pb = b.parameters(), pc = c.parameters();
    bool same = true, differs = false;
    for (std::size_t p = 0; p < pa.size(); ++p)
      for (std::size_t i = 0; i < pa[p].values.size(); ++i) {
        same = same && pa[p].values[i] == pb[p].values[i];
        differs = differs || pa[p].values[i] != pc[p].values[i];
      }
    CHECK(same);
    CHECK(differs);
    // Linear weights: truncated normal, std 0.02 before the cut at 2 std (0.88 * 0.02 after it).
    const auto& q = a.blocks[2].qkv.weight;
    double sum = 0, sq = 0, max = 0;
    for (float v : q.span()) {
      sum += v;
      sq += double(v) * v;
      max = std::max(max, double(std::abs(v)));
    }
    const double n = static_cast<double>(q.size());
    CHECK(std::abs(sum / n) < 1e-3);
    CHECK(std::sqrt(sq / n) == doctest::Approx(0.02 * 0.8796).epsilon(0.03));
    CHECK(max <= 0.04 + 1e-7);
    for (float v : a.blocks[0].qkv.bias.span()) CHECK(v == 0.0f);
    for (float v : a.norm.weight.span()) CHECK(v == 1.0f);
    for (float v : a.norm.bias.span()) CHECK(v == 0.0f);
  }

  TEST_CASE("check_shapes and check_finite name the tensor") {
    const auto cfg = vitc::test::tiny_config();
    auto w = vitc::test::nontrivial_weights<float>(cfg, 1);
    CHECK_NOTHROW(w.check_shapes());
    CHECK_NOTHROW(w.check_finite());
    auto bad = w;
    bad.blocks[1].proj.weight = Tensor<float, 2>({8, 8});
    CHECK_THROWS_WITH_AS(bad.check_shapes(), doctest::Contains("blocks.1.attn.proj.weight"),
                         vitc::ShapeError);
    auto nan = w;
    nan.blocks[0].norm2.bias(3) = std::nanf("");
    CHECK_THROWS_WITH_AS(nan.check_finite(), doctest::Contains("blocks.0.norm2.bias"),
                         vitc::ArgumentError);
    auto inf = w;
    inf.pos_embed(0, 2, 1) = INFINITY;
    CHECK_THROWS_WITH_AS(inf.check_finite(), doctest::Contains("pos_embed"), vitc::ArgumentError);
  }

  TEST_CASE("cast converts every tensor; set_zero clears them") {
    const auto cfg = vitc::test::tiny_config();
    auto w = vitc::test::nontrivial_weights<float>(cfg, 2);
    const auto d = w.cast<double>();
    const auto pw = w.parameters();
    const auto pd = d.parameters();
    bool same = true;
    for (std::size_t p = 0; p < pw.size(); ++p)
      for (std::size_t i = 0; i < pw[p].values.size(); ++i)
        same = same && pd[p].values[i] == static_cast<double>(pw[p].values[i]);
    CHECK(same);
    w.set_zero();
    bool zero = true;
    for (const auto& p : w.parameters())
      for (float v : p.values) zero = zero && v == 0.0f;
    CHECK(zero);
  }
}
