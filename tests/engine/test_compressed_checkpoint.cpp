// SPDX-License-Identifier: Apache-2.0
// engine/compressed_checkpoint.hpp: round trip (same logits from the simulation and the integer
// engine), the record's fields, and bad records rejected with a FormatError naming the field.
#include <doctest/doctest.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "vitcompress/engine/compressed_checkpoint.hpp"
#include "vitcompress/engine/int_vit.hpp"
#include "vitcompress/model/image_batches.hpp"
#include "vitcompress/model/vit_checkpoint.hpp"

namespace compressed_checkpoint_test {

using namespace vitc;

struct CcData {
  Tensor<std::uint8_t, 3> images{{24, 8, 8}};
  Tensor<std::uint8_t, 1> labels{{24}};
  CcData() {
    std::mt19937 rng(11);
    for (auto& v : images.span()) v = static_cast<std::uint8_t>(rng());
    for (auto& v : labels.span()) v = static_cast<std::uint8_t>(rng() % 3);
  }
  [[nodiscard]] model::LabeledImages labeled() const { return {images.cview(), labels.cview()}; }
};

inline quant::FakeQuantViT cc_model(const CcData& d, const std::string& config = "w8a8") {
  // 8x8 images, patch 4, D = 8, two blocks with different (pruned-looking) shapes, 3 classes.
  model::ViTConfig c;
  c.image_size = 8;
  c.patch_size = 4;
  c.in_channels = 1;
  c.embed_dim = 8;
  c.num_classes = 3;
  c.blocks = {model::BlockConfig{2, 4, 4, 16}, model::BlockConfig{1, 4, 4, 12}};
  quant::FakeQuantViT fq(model::ViTWeights<float>::random(c, 5), quant::QuantConfig::named(config));
  fq.quantize_weights();
  fq.calibrate(d.labeled(), 24, {}, 8);
  return fq;
}

inline engine::CompressionInfo cc_info() {
  engine::CompressionInfo info;
  info.prune_ratio = 0.25;
  info.importance = "taylor";
  info.groups = {"heads", "mlp"};
  info.round_to = 4;
  info.finetune_epochs = 2;
  info.qat_epochs = 1;
  info.calibration_images = 24;
  info.quant_config = "w8a8";
  info.source_parameters = 100000;
  info.source_macs = 200000;
  info.source_file = "source.safetensors";
  info.top1 = 0.875;
  info.top1_images = 10000;
  info.measured_by = "engine";
  return info;
}

inline Tensor<float, 4> cc_images(const CcData& d) {
  Tensor<float, 4> x({4, 1, 8, 8});
  const std::vector<Index> idx{0, 1, 2, 3};
  model::make_image_batch(d.images.cview(), idx, {}, {}, nullptr, x.view());
  return x;
}

// The checkpoint bytes of `fq` with a "vitc.compressed" entry replaced by `record`.
inline std::vector<std::byte> cc_bytes_with_record(quant::FakeQuantViT& fq,
                                                   const std::string& record) {
  return quant::quantized_writer(fq, {{engine::kCompressedMetadataKey, record}}).serialize();
}

inline std::string cc_error(quant::FakeQuantViT& fq, const std::string& record) {
  const auto bytes = cc_bytes_with_record(fq, record);
  const auto reader = io::SafetensorsReader::from_buffer(bytes);
  try {
    (void)engine::load_compressed(reader);
  } catch (const FormatError& e) {
    return e.what();
  }
  return "";
}

}  // namespace compressed_checkpoint_test

TEST_SUITE("engine") {
  using namespace compressed_checkpoint_test;

  TEST_CASE("compressed checkpoint: round trip keeps the record and the logits") {
    const CcData d;
    auto fq = cc_model(d);
    const auto path = std::filesystem::temp_directory_path() / "vitc_test_compressed.safetensors";
    engine::save_compressed(path, fq, cc_info());
    const auto reader = io::SafetensorsReader::open(path);
    CHECK(engine::is_compressed_checkpoint(reader));
    CHECK(quant::is_quantized_checkpoint(reader));
    auto loaded = engine::load_compressed(path);
    std::filesystem::remove(path);
    const auto& i = loaded.info;
    CHECK(i.prune_ratio == 0.25);
    CHECK(i.importance == "taylor");
    CHECK(i.groups == std::vector<std::string>{"heads", "mlp"});
    CHECK(i.round_to == 4);
    CHECK(i.finetune_epochs == 2);
    CHECK(i.qat_epochs == 1);
    CHECK(i.calibration_images == 24);
    CHECK(i.quant_config == "w8a8");
    CHECK(i.source_parameters == 100000);
    CHECK(i.source_macs == 200000);
    CHECK(i.source_file == "source.safetensors");
    REQUIRE(i.top1.has_value());
    CHECK(*i.top1 == 0.875);
    CHECK(i.top1_images == 10000);
    CHECK(i.measured_by == "engine");
    CHECK(loaded.model.master_weights().config.blocks.size() == 2);
    CHECK(loaded.model.master_weights().config.blocks[1].mlp_hidden == 12);

    const auto x = cc_images(d);
    Tensor<float, 2> a({4, 3}), b({4, 3});
    fq.predict(x.cview(), a.view());
    loaded.model.predict(x.cview(), b.view());
    for (Index k = 0; k < a.size(); ++k) CHECK(a.span()[k] == b.span()[k]);

    // The integer engine built from the loaded model computes what it computes from the original.
    engine::IntViT<> e1(fq, 4), e2(loaded.model, 4);
    e1.run(x.cview(), a.view());
    e2.run(x.cview(), b.view());
    for (Index k = 0; k < a.size(); ++k) CHECK(a.span()[k] == b.span()[k]);
  }

  TEST_CASE("compressed checkpoint: record without accuracy, w4a8") {
    const CcData d;
    auto fq = cc_model(d, "w4a8");
    auto info = cc_info();
    info.quant_config = "w4a8";
    info.top1.reset();
    info.source_file.clear();
    const auto bytes =
        quant::quantized_writer(
            fq, {{engine::kCompressedMetadataKey, engine::compression_info_json(info)}})
            .serialize();
    const auto loaded = engine::load_compressed(io::SafetensorsReader::from_buffer(bytes));
    CHECK_FALSE(loaded.info.top1.has_value());
    CHECK(loaded.info.source_file.empty());
    CHECK(loaded.info.quant_config == "w4a8");
  }

  TEST_CASE("compressed checkpoint: bad records are FormatErrors naming the field") {
    const CcData d;
    auto fq = cc_model(d);
    const std::string good = engine::compression_info_json(cc_info());
    CHECK(cc_error(fq, good).empty());
    auto with = [&](const std::string& pointer, const nlohmann::json& value) {
      auto j = nlohmann::json::parse(good);
      j[nlohmann::json::json_pointer(pointer)] = value;
      return j.dump();
    };
    auto without = [&](const std::string& parent, const std::string& key) {
      auto j = nlohmann::json::parse(good);
      if (parent.empty())
        j.erase(key);
      else
        j[parent].erase(key);
      return j.dump();
    };
    CHECK(cc_error(fq, "{").find("not valid JSON") != std::string::npos);
    CHECK(cc_error(fq, "[1]").find("object") != std::string::npos);
    CHECK(cc_error(fq, with("/format_version", 2)).find("format_version") != std::string::npos);
    CHECK(cc_error(fq, with("/format_version", "1")).find("format_version") != std::string::npos);
    CHECK(cc_error(fq, without("", "recipe")).find("'recipe' is missing") != std::string::npos);
    CHECK(cc_error(fq, with("/recipe", 3)).find("'recipe' must be an object") != std::string::npos);
    CHECK(cc_error(fq, with("/recipe/prune_ratio", 1.0)).find("recipe.prune_ratio") !=
          std::string::npos);
    CHECK(cc_error(fq, with("/recipe/prune_ratio", -0.1)).find("recipe.prune_ratio") !=
          std::string::npos);
    CHECK(cc_error(fq, with("/recipe/prune_ratio", "x")).find("recipe.prune_ratio") !=
          std::string::npos);
    CHECK(cc_error(fq, with("/recipe/importance", "random")).find("recipe.importance") !=
          std::string::npos);
    CHECK(cc_error(fq, with("/recipe/groups", nlohmann::json::array({"heads", "rows"})))
              .find("recipe.groups") != std::string::npos);
    CHECK(cc_error(fq, with("/recipe/groups", "heads")).find("recipe.groups") != std::string::npos);
    CHECK(cc_error(fq, with("/recipe/round", 0)).find("recipe.round") != std::string::npos);
    CHECK(cc_error(fq, with("/recipe/round", 2.5)).find("recipe.round") != std::string::npos);
    CHECK(cc_error(fq, with("/recipe/finetune_epochs", -1)).find("recipe.finetune_epochs") !=
          std::string::npos);
    CHECK(cc_error(fq, with("/recipe/qat_epochs", 18446744073709551615ULL))
              .find("recipe.qat_epochs") != std::string::npos);
    CHECK(cc_error(fq, with("/recipe/calibration_images", 0)).find("recipe.calibration_images") !=
          std::string::npos);
    CHECK(cc_error(fq, with("/recipe/quant_config", "w4a8")).find("recipe.quant_config") !=
          std::string::npos);
    CHECK(cc_error(fq, with("/recipe/extra", 1)).find("recipe.extra") != std::string::npos);
    CHECK(cc_error(fq, with("/extra", 1)).find("'extra' is not known") != std::string::npos);
    CHECK(cc_error(fq, without("source", "parameters")).find("source.parameters") !=
          std::string::npos);
    CHECK(cc_error(fq, with("/source/parameters", 10)).find("source.parameters") !=
          std::string::npos);
    CHECK(cc_error(fq, with("/source/macs_per_image", 10)).find("source.macs_per_image") !=
          std::string::npos);
    CHECK(cc_error(fq, with("/source/file", 7)).find("source.file") != std::string::npos);
    CHECK(cc_error(fq, with("/accuracy/top1", 1.5)).find("accuracy.top1") != std::string::npos);
    CHECK(cc_error(fq, with("/accuracy/test_images", 0)).find("accuracy.test_images") !=
          std::string::npos);
    CHECK(cc_error(fq, with("/accuracy/measured_by", "guess")).find("accuracy.measured_by") !=
          std::string::npos);
  }

  TEST_CASE("compressed checkpoint: not compressed, or a bad record given to save") {
    const CcData d;
    auto fq = cc_model(d);
    const auto plain = quant::quantized_writer(fq).serialize();
    const auto reader = io::SafetensorsReader::from_buffer(plain);
    CHECK_FALSE(engine::is_compressed_checkpoint(reader));
    CHECK_THROWS_AS((void)engine::load_compressed(reader), FormatError);
    auto info = cc_info();
    info.quant_config = "w4a8";
    const auto path =
        std::filesystem::temp_directory_path() / "vitc_test_compressed_bad.safetensors";
    CHECK_THROWS_AS(engine::save_compressed(path, fq, info), ArgumentError);
    info = cc_info();
    info.source_parameters = 1;
    CHECK_THROWS_AS(engine::save_compressed(path, fq, info), ArgumentError);
    info = cc_info();
    info.importance = "random";
    CHECK_THROWS_AS(engine::save_compressed(path, fq, info), ArgumentError);
    CHECK_FALSE(std::filesystem::exists(path));
  }
}
