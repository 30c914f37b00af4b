// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include <string>

#include "vitcompress/model/vit_config.hpp"

using vitc::model::BlockConfig;
using vitc::model::ViTConfig;

TEST_SUITE("model") {
  TEST_CASE("DeiT presets have timm's shapes, parameter counts and MACs") {
    // Parameter counts of timm's deit_{tiny,small,base}_patch16_224 state dicts.
    CHECK(ViTConfig::deit_tiny().parameter_count() == 5'717'416);
    CHECK(ViTConfig::deit_small().parameter_count() == 22'050'664);
    CHECK(ViTConfig::deit_base().parameter_count() == 86'567'656);
    const ViTConfig s = ViTConfig::deit_small();
    CHECK(s.num_patches() == 196);
    CHECK(s.num_tokens() == 197);
    CHECK(s.depth() == 12);
    CHECK(s.blocks[0] == BlockConfig{6, 64, 64, 1536});
    CHECK(s.blocks[0].qkv_rows() == 1152);
    // 196*768*384 + 12 * (197*384*1152 + 2*6*197*197*64 + 197*384*384 + 2*197*384*1536) + 384*1000
    const std::int64_t block =
        197LL * 384 * 1152 + 2LL * 6 * 197 * 197 * 64 + 197LL * 384 * 384 + 2LL * 197 * 384 * 1536;
    CHECK(s.macs_per_image() == 196LL * 768 * 384 + 12 * block + 384LL * 1000);
    CHECK(s.macs_per_image() > 4'550'000'000LL);  // the published "4.6 GMACs"
    CHECK(s.macs_per_image() < 4'650'000'000LL);
    const ViTConfig f = ViTConfig::fashion_mnist_vit();
    CHECK(f.num_tokens() == 17);
    CHECK(f.patch_dim() == 49);
    CHECK_NOTHROW(f.validate());
  }

  TEST_CASE("validate() names the field at fault") {
    const auto expect_error = [](ViTConfig c, const std::string& field) {
      CAPTURE(field);
      CHECK_THROWS_WITH_AS(c.validate(), doctest::Contains(field.c_str()), vitc::ArgumentError);
    };
    ViTConfig c = ViTConfig::fashion_mnist_vit();
    c.image_size = 0;
    expect_error(c, "image_size");
    c = ViTConfig::fashion_mnist_vit();
    c.patch_size = 5;  // does not divide 28
    expect_error(c, "patch_size");
    c = ViTConfig::fashion_mnist_vit();
    c.in_channels = -1;
    expect_error(c, "in_channels");
    c = ViTConfig::fashion_mnist_vit();
    c.embed_dim = 0;
    expect_error(c, "embed_dim");
    c = ViTConfig::fashion_mnist_vit();
    c.num_classes = 0;
    expect_error(c, "num_classes");
    c = ViTConfig::fashion_mnist_vit();
    c.layer_norm_eps = 0;
    expect_error(c, "layer_norm_eps");
    c = ViTConfig::fashion_mnist_vit();
    c.class_token = false;
    expect_error(c, "class_token");
    c = ViTConfig::fashion_mnist_vit();
    c.blocks.clear();
    expect_error(c, "blocks");
    c = ViTConfig::fashion_mnist_vit();
    c.blocks[3].v_head_dim = 0;
    expect_error(c, "blocks[3].v_head_dim");
    c = ViTConfig::fashion_mnist_vit();
    c.blocks[5].mlp_hidden = -4;
    expect_error(c, "blocks[5].mlp_hidden");
    c = ViTConfig::fashion_mnist_vit();
    c.blocks[0].num_heads = vitc::Index{1} << 40;  // sizes that would overflow products
    expect_error(c, "blocks[0].num_heads");
    c = ViTConfig::fashion_mnist_vit();
    c.embed_dim = vitc::Index{1} << 20;
    c.num_classes = vitc::Index{1} << 20;  // a 2^40-element head
    expect_error(c, "head.weight");
  }

  TEST_CASE("uniform() requires heads to divide the width") {
    CHECK_THROWS_WITH_AS(ViTConfig::uniform(28, 7, 1, 96, 6, 5, 192, 10),
                         doctest::Contains("num_heads"), vitc::ArgumentError);
  }

  TEST_CASE("JSON round trip keeps uneven blocks") {
    ViTConfig c = ViTConfig::fashion_mnist_vit();
    c.blocks[1] = BlockConfig{3, 16, 20, 100};
    c.layer_norm_eps = 1e-5;
    const ViTConfig back = ViTConfig::from_json(c.to_json());
    CHECK(back == c);
  }

  TEST_CASE("from_json rejects malformed configs, naming the field") {
    CHECK_THROWS_AS(ViTConfig::from_json("{not json"), vitc::FormatError);
    CHECK_THROWS_AS(ViTConfig::from_json("[1, 2]"), vitc::FormatError);
    const std::string good = ViTConfig::fashion_mnist_vit().to_json();
    std::string missing = good;
    missing.replace(missing.find("\"embed_dim\""), 11, "\"embed_dix\"");
    CHECK_THROWS_WITH_AS(ViTConfig::from_json(missing), doctest::Contains("embed_dim"),
                         vitc::FormatError);
    std::string mistyped = good;
    mistyped.replace(mistyped.find("\"mlp_hidden\":192"), 16, "\"mlp_hidden\":\"x\"");
    CHECK_THROWS_WITH_AS(ViTConfig::from_json(mistyped), doctest::Contains("blocks[0].mlp_hidden"),
                         vitc::FormatError);
    std::string negative = good;
    negative.replace(negative.find("\"patch_size\":7"), 14, "\"patch_size\":-7");
    CHECK_THROWS_WITH_AS(ViTConfig::from_json(negative), doctest::Contains("patch_size"),
                         vitc::ArgumentError);
    std::string version = good;
    version.replace(version.find("\"version\":1"), 11, "\"version\":2");
    CHECK_THROWS_WITH_AS(ViTConfig::from_json(version), doctest::Contains("version"),
                         vitc::FormatError);
  }
}
