// SPDX-License-Identifier: Apache-2.0
// Writes the seed corpus of fuzz_checkpoint into DIR: a tiny float ViT (8x8 images, patch 4, width
// 8, one block of 2 heads) and the same model quantized as w8a8 and w4a8 after calibration on
// random images, as quantized and as compressed checkpoints. Deterministic (fixed seeds), so
// tests/fuzz/run regenerates it on every run instead of committing binary files.
//   usage: fuzz_checkpoint_seeds DIR

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <random>

#include "vitcompress/engine/compressed_checkpoint.hpp"
#include "vitcompress/model/image_batches.hpp"
#include "vitcompress/model/vit_checkpoint.hpp"
#include "vitcompress/quant/quantized_checkpoint.hpp"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: fuzz_checkpoint_seeds DIR\n");
    return 2;
  }
  const std::filesystem::path dir = argv[1];
  std::filesystem::create_directories(dir);
  namespace model = vitc::model;
  const auto config = model::ViTConfig::uniform(8, 4, 1, 8, 1, 2, 16, 3);
  const auto weights = model::ViTWeights<float>::random(config, 1);
  model::save_vit(dir / "float.safetensors", weights);

  vitc::Tensor<std::uint8_t, 3> images({16, 8, 8});
  vitc::Tensor<std::uint8_t, 1> labels({16});
  std::mt19937 rng(3);
  for (auto& v : images.span()) v = static_cast<std::uint8_t>(rng());
  for (auto& v : labels.span()) v = static_cast<std::uint8_t>(rng() % 3);
  const model::LabeledImages data{images.view(), labels.view()};
  for (const char* name : {"w8a8", "w4a8"}) {
    vitc::quant::FakeQuantViT q(weights, vitc::quant::QuantConfig::named(name));
    q.calibrate(data, data.size());
    vitc::quant::save_quantized(dir / (std::string(name) + ".safetensors"), q);
    vitc::engine::CompressionInfo info;
    info.prune_ratio = 0.25;
    info.importance = "taylor";
    info.groups = {"heads", "mlp"};
    info.finetune_epochs = 1;
    info.calibration_images = data.size();
    info.quant_config = name;
    info.source_parameters = config.parameter_count() * 2;
    info.source_macs = config.macs_per_image() * 2;
    info.source_file = "float.safetensors";
    info.top1 = 0.5;
    info.top1_images = 16;
    info.measured_by = "engine";
    vitc::engine::save_compressed(dir / (std::string("compressed_") + name + ".safetensors"), q,
                                  info);
  }
  return 0;
}
