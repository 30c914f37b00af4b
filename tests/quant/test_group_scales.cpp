// SPDX-License-Identifier: Apache-2.0
// Integer group scales (quant/group_scales.hpp): snapping observer scales to σ_r·m, recovering
// σ_r and m, the config option that asks for them, and the simulation that uses them.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "vitcompress/quant/fake_quant_vit.hpp"
#include "vitcompress/quant/group_scales.hpp"
#include "vitcompress/quant/quant_config.hpp"
#include "vitcompress/quant/quantized_checkpoint.hpp"

namespace {

using namespace vitc;
using namespace vitc::quant;

TensorQuantParams grouped(std::vector<float> scales, Index group_size = 32) {
  TensorQuantParams p;
  p.scheme = {SchemeKind::kSymmetric, 4};
  p.granularity = {GranularityKind::kGroup, 0, group_size};
  p.zero_points.assign(scales.size(), 0);
  p.scales = std::move(scales);
  return p;
}

}  // namespace

TEST_SUITE("quant") {
  TEST_CASE("snapped group scales are integer multiples of a row step, never smaller") {
    std::mt19937 rng(5);
    std::uniform_real_distribution<float> u(0.001f, 2.0f);
    for (int bits : {1, 2, 4, 8}) {
      const Index rows = 7, per_row = 5;
      std::vector<float> raw(static_cast<std::size_t>(rows * per_row));
      for (float& s : raw) s = u(rng);
      raw[3] = raw[4];  // two equal groups, and one already a multiple below
      TensorQuantParams p = grouped(raw);
      snap_group_scales(p, rows, bits, "w");
      const auto split = split_group_scales(p, rows, bits, "w");
      const std::int32_t levels = group_scale_levels(bits);
      for (Index r = 0; r < rows; ++r) {
        const float* before = raw.data() + r * per_row;
        const float top = *std::max_element(before, before + per_row);
        CAPTURE(bits);
        CAPTURE(r);
        const float step = split.row_scale[static_cast<std::size_t>(r)];
        CHECK(step >= top / levels);  // rounded up to 24 − bits significant bits
        CHECK(step <= top / levels * (1 + std::ldexp(1.0f, bits - 23)));
        std::int32_t widest = 0;
        for (Index g = 0; g < per_row; ++g) {
          const auto i = static_cast<std::size_t>(r * per_row + g);
          const std::int32_t m = split.multipliers[i];
          CHECK(m >= 1);
          CHECK(m <= levels);
          widest = std::max(widest, m);
          // ⌈s/σ⌉: the step grows by less than σ, and shrinks at most by float rounding.
          CHECK(p.scales[i] >= before[g] * (1 - 2e-6f));
          CHECK(p.scales[i] < before[g] + step * 1.0001f);
          CHECK(p.scales[i] == step * static_cast<float>(m));  // exact
        }
        CHECK(widest == levels);  // the widest group keeps its own step
      }
      // Snapping again changes nothing.
      TensorQuantParams again = p;
      snap_group_scales(again, rows, bits, "w");
      CHECK(again.scales == p.scales);
    }
  }

  TEST_CASE("a group scale already a multiple keeps it; groups far below the step get m = 1") {
    TensorQuantParams p = grouped({1.5f, 0.5f, 0.001f, 1.0f});
    snap_group_scales(p, 1, 2, "w");  // L = 3, σ = 0.5
    CHECK(p.scales == std::vector<float>{1.5f, 0.5f, 0.5f, 1.0f});
  }

  TEST_CASE("split_group_scales rejects scales that are not integer multiples") {
    CHECK_THROWS_WITH_AS((void)split_group_scales(grouped({1.5f, 0.7f}), 1, 2, "blocks.0.w"),
                         doctest::Contains("blocks.0.w: group scale 1"), ArgumentError);
    CHECK_THROWS_AS((void)split_group_scales(grouped({1.5f, 0.5f}), 1, 9, "w"), ArgumentError);
    CHECK_THROWS_AS((void)split_group_scales(grouped({1.5f, 0.5f, 1.0f}), 2, 2, "w"),
                    ArgumentError);  // 3 groups, 2 rows
    TensorQuantParams per_channel = grouped({1.0f, 2.0f});
    per_channel.granularity = {GranularityKind::kChannel, 0, 0};
    CHECK_THROWS_WITH_AS((void)split_group_scales(per_channel, 2, 4, "w"),
                         doctest::Contains("per-group"), ArgumentError);
    CHECK_NOTHROW((void)split_group_scales(grouped({1.5f, 0.5f}), 1, 2, "w"));
  }

  TEST_CASE("group_scale_bits in a config: validated, in JSON, and applied by the simulation") {
    std::mt19937 rng(9);
    QuantConfig c = QuantConfig::named("w4a8-g32");
    const TensorQuantSpec& fc1 = c.weights[static_cast<std::size_t>(WeightKind::kFc1)];
    CHECK(fc1.granularity.kind == GranularityKind::kGroup);
    CHECK(fc1.granularity.group_size == 32);
    CHECK(fc1.group_scale_bits == 4);
    const QuantConfig back = QuantConfig::from_json(c.to_json());
    CHECK(back.weights == c.weights);
    CHECK(QuantConfig::from_json(QuantConfig::named("w4a8").to_json())
              .to_json()
              .find("group_scale_bits") == std::string::npos);

    QuantConfig bad = QuantConfig::named("w4a8");
    bad.weights[static_cast<std::size_t>(WeightKind::kQkv)].group_scale_bits = 4;  // per channel
    CHECK_THROWS_WITH_AS(bad.validate(), doctest::Contains("weights.qkv"), ArgumentError);
    bad = c;
    bad.weights[static_cast<std::size_t>(WeightKind::kQkv)].group_scale_bits = 9;
    CHECK_THROWS_WITH_AS(bad.validate(), doctest::Contains("group_scale_bits = 9"), ArgumentError);
    bad = c;
    auto& key = bad.activations[static_cast<std::size_t>(model::HookSite::kKey)];
    key.granularity = {GranularityKind::kGroup, 0, 8};
    key.group_scale_bits = 4;
    CHECK_THROWS_WITH_AS(bad.validate(), doctest::Contains("weights only"), ArgumentError);
    // The same spec as an override of one block's keys; a weight override keeps it.
    const TensorQuantSpec group_key = key;
    bad = c;
    bad.overrides["blocks.1.key"] = group_key;
    CHECK_THROWS_WITH_AS(bad.validate(), doctest::Contains("overrides.blocks.1.key"),
                         ArgumentError);
    CHECK_THROWS_WITH_AS(
        (void)QuantConfig::from_json(
            R"({"base": "w4a8", "overrides": {"blocks.0.key": {"granularity": "group",
                "group_size": 8, "group_scale_bits": 4}}})"),
        doctest::Contains("weights only"), ArgumentError);
    const QuantConfig fc1_only = QuantConfig::from_json(
        R"({"base": "w4a8", "overrides": {"blocks.0.mlp.fc1.weight": {"granularity": "group",
            "group_size": 32, "group_scale_bits": 4}}})");
    CHECK(fc1_only.weight(WeightKind::kFc1, 0).group_scale_bits == 4);
    CHECK(fc1_only.weight(WeightKind::kFc1, 1).group_scale_bits == 0);

    // The simulation's PTQ snaps the observer's scales of those weights, and only of those.
    model::ViTConfig vc;
    vc.image_size = 16;
    vc.patch_size = 4;
    vc.in_channels = 1;
    vc.embed_dim = 64;
    vc.num_classes = 10;
    vc.blocks = {model::BlockConfig{2, 32, 32, 128}};
    FakeQuantViT fq(model::ViTWeights<float>::random(vc, 3), c);
    Tensor<std::uint8_t, 3> images({8, 16, 16});
    Tensor<std::uint8_t, 1> labels({8});
    for (Index i = 0; i < images.size(); ++i) images.data()[i] = static_cast<std::uint8_t>(rng());
    for (Index i = 0; i < 8; ++i) labels(i) = static_cast<std::uint8_t>(i);
    fq.calibrate(model::LabeledImages{images.cview(), labels.cview()}, 8);
    int snapped = 0;
    for (const WeightPoint& w : fq.weight_points()) {
      if (w.spec.group_scale_bits == 0) continue;
      const Index rows = w.params.num_groups() / ((w.cols + 31) / 32);
      CHECK_NOTHROW((void)split_group_scales(w.params, rows, 4, w.name));
      ++snapped;
    }
    CHECK(snapped == 4);  // qkv, proj, fc1, fc2

    // A checkpoint whose group scales are not multiples of a row step is refused on load.
    const auto bytes = quantized_writer(fq).serialize();
    CHECK_NOTHROW((void)load_quantized(io::SafetensorsReader::from_bytes(bytes)));
    const auto r0 = io::SafetensorsReader::from_bytes(bytes);
    io::SafetensorsWriter tampered;
    for (const auto& [k, v] : r0.metadata()) tampered.set_metadata(k, v);
    for (const auto& t : r0.tensors()) {
      std::vector<std::byte> b(t.bytes.begin(), t.bytes.end());
      if (t.name == "blocks.0.mlp.fc1.weight.scale") {  // [128, 2]: row 0's two groups
        float s[2];
        std::memcpy(s, b.data(), sizeof s);
        s[s[0] >= s[1] ? 1 : 0] = std::max(s[0], s[1]) * 0.53f;  // 7.95 steps
        std::memcpy(b.data(), s, sizeof s);
      }
      tampered.add_raw(t.name, t.dtype, t.shape, b);
    }
    CHECK_THROWS_WITH_AS(
        (void)load_quantized(io::SafetensorsReader::from_bytes(tampered.serialize())),
        doctest::Contains("blocks.0.mlp.fc1.weight: group scale"), ArgumentError);
  }
}
