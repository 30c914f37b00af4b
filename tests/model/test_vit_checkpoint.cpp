// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <string>

#include "vit_test_util.hpp"
#include "vitcompress/io/safetensors.hpp"
#include "vitcompress/model/vit_checkpoint.hpp"

using vitc::Index;
using vitc::Tensor;
namespace model = vitc::model;
namespace io = vitc::io;

namespace {

// A checkpoint as timm would save it: parameters only, no config metadata.
template <class Mutate>
io::SafetensorsReader timm_style(const model::ViTWeights<float>& w, Mutate&& mutate) {
  io::SafetensorsWriter writer;
  w.for_each([&](const std::string& name, auto view) { writer.add(name, view); });
  mutate(writer);
  return io::SafetensorsReader::from_bytes(writer.serialize());
}

io::SafetensorsReader timm_style(const model::ViTWeights<float>& w) {
  return timm_style(w, [](io::SafetensorsWriter&) {});
}

void check_equal(const model::ViTWeights<float>& a, const model::ViTWeights<float>& b) {
  REQUIRE(a.config == b.config);
  const auto pa = a.parameters(), pb = b.parameters();
  REQUIRE(pa.size() == pb.size());
  for (std::size_t p = 0; p < pa.size(); ++p) {
    CHECK(pa[p].name == pb[p].name);
    CHECK(pa[p].shape == pb[p].shape);
    bool same = true;
    for (std::size_t i = 0; i < pa[p].values.size(); ++i)
      same = same && pa[p].values[i] == pb[p].values[i];
    CAPTURE(pa[p].name);
    CHECK(same);
  }
}

}  // namespace

TEST_SUITE("model") {
  TEST_CASE("save_vit / load_vit round trip, config and metadata included") {
    const auto cfg = vitc::test::tiny_config();  // uneven blocks: only the metadata knows them
    const auto w = vitc::test::nontrivial_weights<float>(cfg, 12);
    const auto dir = std::filesystem::temp_directory_path() / "vitc_test_model_checkpoint";
    std::filesystem::create_directories(dir);
    const auto path = dir / "tiny.safetensors";
    model::save_vit(path, w, {{"vitc.note", "hello"}});
    const auto reader = io::SafetensorsReader::open(path);
    CHECK(reader.metadata().at("vitc.note") == "hello");
    CHECK(reader.metadata().at("format") == "pt");
    CHECK(model::ViTConfig::from_json(reader.metadata().at(model::kConfigMetadataKey)) == cfg);
    check_equal(model::load_vit(path), w);
    const auto d = model::load_vit<double>(path);
    CHECK(d.blocks[1].fc2.weight(2, 3) == static_cast<double>(w.blocks[1].fc2.weight(2, 3)));
    std::filesystem::remove_all(dir);
  }

  TEST_CASE("a timm checkpoint without metadata: the config is inferred from shapes") {
    auto cfg = model::ViTConfig::uniform(32, 8, 3, 128, 3, 2, 200, 7);  // head dim 64
    const auto w = model::ViTWeights<float>::random(cfg, 5);
    const auto reader = timm_style(w);
    CHECK(model::infer_vit_config(reader) == cfg);
    check_equal(model::load_vit(reader), w);
    // Head counts given explicitly (here: 4 heads of 32 is a different model with equal shapes).
    model::LoadOptions four;
    four.num_heads = {4};
    const auto c4 = model::infer_vit_config(reader, four);
    CHECK(c4.blocks[1] == model::BlockConfig{4, 32, 32, 200});
    model::LoadOptions per_block;
    per_block.num_heads = {1, 2, 4};
    const auto cp = model::infer_vit_config(reader, per_block);
    CHECK(cp.blocks[0].num_heads == 1);
    CHECK(cp.blocks[2].qk_head_dim == 32);
    model::LoadOptions wrong_count;
    wrong_count.num_heads = {1, 2};
    CHECK_THROWS_WITH_AS(model::infer_vit_config(reader, wrong_count),
                         doctest::Contains("num_heads"), vitc::ArgumentError);
    model::LoadOptions bad_dim;
    bad_dim.head_dim = 48;  // 128 value channels are not a multiple of 48
    CHECK_THROWS_WITH_AS(model::infer_vit_config(reader, bad_dim),
                         doctest::Contains("blocks.0.attn.proj.weight"), vitc::ArgumentError);
  }

  TEST_CASE("pruned shapes without metadata: separate q/k and v head dims are recovered") {
    auto cfg = model::ViTConfig::uniform(16, 4, 1, 64, 2, 2, 96, 3);
    cfg.blocks[1] = model::BlockConfig{2, 24, 16, 40};
    const auto w = model::ViTWeights<float>::random(cfg, 6);
    model::LoadOptions two;
    two.num_heads = {2};
    CHECK(model::infer_vit_config(timm_style(w), two) == cfg);
  }

  TEST_CASE("loading names the tensor at fault") {
    const auto cfg = vitc::test::tiny_config();
    const auto w = vitc::test::nontrivial_weights<float>(cfg, 3);
    io::SafetensorsWriter base = model::vit_writer(w);
    const auto with = [&](const std::string& name, auto tensor) {
      io::SafetensorsWriter writer;
      writer.set_metadata(model::kConfigMetadataKey, cfg.to_json());
      w.for_each([&](const std::string& n, auto view) {
        if (n != name) writer.add(n, view);
      });
      writer.add(name, tensor.view());
      return io::SafetensorsReader::from_bytes(writer.serialize());
    };
    SUBCASE("shape mismatch") {
      const auto r = with("blocks.1.mlp.fc1.weight", Tensor<float, 2>({7, 8}));
      CHECK_THROWS_WITH_AS(model::load_vit(r), doctest::Contains("blocks.1.mlp.fc1.weight"),
                           vitc::ShapeError);
    }
    SUBCASE("rank mismatch") {
      const auto r = with("cls_token", Tensor<float, 2>({1, 8}));
      CHECK_THROWS_WITH_AS(model::load_vit(r), doctest::Contains("cls_token"), vitc::ShapeError);
    }
    SUBCASE("NaN") {
      Tensor<float, 1> b = Tensor<float, 1>::copy_of(w.blocks[0].qkv.bias.view());
      b(5) = std::nanf("");
      const auto r = with("blocks.0.attn.qkv.bias", b);
      CHECK_THROWS_WITH_AS(model::load_vit(r), doctest::Contains("blocks.0.attn.qkv.bias"),
                           vitc::ArgumentError);
    }
    SUBCASE("infinity") {
      Tensor<float, 2> h = Tensor<float, 2>::copy_of(w.head.weight.view());
      h(2, 7) = -INFINITY;
      const auto r = with("head.weight", h);
      CHECK_THROWS_WITH_AS(model::load_vit(r), doctest::Contains("head.weight"),
                           vitc::ArgumentError);
    }
    SUBCASE("wrong dtype") {
      Tensor<std::int32_t, 1> b({8});
      const auto r = with("norm.bias", b);
      CHECK_THROWS_WITH_AS(model::load_vit(r), doctest::Contains("norm.bias"), vitc::FormatError);
    }
    SUBCASE("missing tensor") {
      io::SafetensorsWriter writer;
      writer.set_metadata(model::kConfigMetadataKey, cfg.to_json());
      w.for_each([&](const std::string& n, auto view) {
        if (n != "blocks.1.norm2.weight") writer.add(n, view);
      });
      const auto r = io::SafetensorsReader::from_bytes(writer.serialize());
      CHECK_THROWS_WITH_AS(model::load_vit(r), doctest::Contains("blocks.1.norm2.weight"),
                           vitc::FormatError);
    }
    SUBCASE("unknown tensors are refused unless allowed") {
      Tensor<float, 1> extra({3});
      base.add("blocks.0.attn.q_norm.weight", extra.view());
      const auto r = io::SafetensorsReader::from_bytes(base.serialize());
      CHECK_THROWS_WITH_AS(model::load_vit(r), doctest::Contains("blocks.0.attn.q_norm.weight"),
                           vitc::FormatError);
      model::LoadOptions allow;
      allow.allow_unknown_tensors = true;
      check_equal(model::load_vit(r, allow), w);
    }
    SUBCASE("distilled DeiT is out of scope and says so") {
      Tensor<float, 3> dist({1, 1, 8});
      base.add("dist_token", dist.view());
      const auto r = io::SafetensorsReader::from_bytes(base.serialize());
      CHECK_THROWS_WITH_AS(model::load_vit(r), doctest::Contains("distilled"), vitc::FormatError);
    }
    SUBCASE("malformed config metadata") {
      io::SafetensorsWriter writer;
      writer.set_metadata(model::kConfigMetadataKey, "{\"image_size\": 8}");
      w.for_each([&](const std::string& n, auto view) { writer.add(n, view); });
      const auto r = io::SafetensorsReader::from_bytes(writer.serialize());
      CHECK_THROWS_WITH_AS(model::load_vit(r), doctest::Contains("vitc.config"), vitc::FormatError);
    }
    SUBCASE("timm checkpoint whose pos_embed is not 1 + a square") {
      const auto w2 =
          model::ViTWeights<float>::random(model::ViTConfig::uniform(16, 4, 1, 64, 1, 1, 8, 2), 1);
      const auto bad = timm_style(w2, [](io::SafetensorsWriter& writer) {
        writer.add("pos_embed_extra", Tensor<float, 1>({1}).view());
      });
      io::SafetensorsWriter writer;
      w2.for_each([&](const std::string& n, auto view) {
        if (n != "pos_embed") writer.add(n, view);
      });
      writer.add("pos_embed", Tensor<float, 3>({1, 16, 64}).view());  // 15 patches
      CHECK_THROWS_WITH_AS(model::load_vit(io::SafetensorsReader::from_bytes(writer.serialize())),
                           doctest::Contains("pos_embed"), vitc::ArgumentError);
      CHECK_THROWS_WITH_AS(model::load_vit(bad), doctest::Contains("pos_embed_extra"),
                           vitc::FormatError);
    }
  }
}
