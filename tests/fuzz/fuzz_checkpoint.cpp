// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for the checkpoint loaders above the safetensors layer: a float ViT
// (model::load_vit, which infers or reads the configuration), a quantized ViT
// (quant::load_quantized, which validates codes, scales and the quantization configuration) and a
// compressed ViT (engine::load_compressed: the quantized checkpoint plus its "vitc.compressed"
// record). A checkpoint that loads must also run: one forward pass on a constant image. Only
// vitc::Error may escape; a crash, a sanitizer report or any other exception is a bug.
// (The integer engine is not run here: its SIMD output stages do not compile under clang 14's
// always_inline target checks, and libFuzzer needs clang.)
//
// The seed corpus is generated (fuzz_checkpoint_seeds): tiny float, w8a8 and w4a8 checkpoints,
// and compressed w8a8 and w4a8 ones.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <span>

#include "vitcompress/engine/compressed_checkpoint.hpp"
#include "vitcompress/io/safetensors.hpp"
#include "vitcompress/model/vit_checkpoint.hpp"
#include "vitcompress/model/vit_forward.hpp"
#include "vitcompress/quant/quantized_checkpoint.hpp"

namespace {

// Hostile configurations may describe models far larger than the file; the loaders must reject
// those before allocating, so a modest cap on the image keeps each run fast without hiding bugs.
constexpr vitc::Index kMaxPixels = 64 * 64 * 4;

template <class Predict>
void run_once(const vitc::model::ViTConfig& c, Predict&& predict) {
  if (c.image_size * c.image_size * c.in_channels > kMaxPixels) return;
  vitc::Tensor<float, 4> image({1, c.in_channels, c.image_size, c.image_size});
  for (float& v : image.span()) v = 0.25f;
  vitc::Tensor<float, 2> logits({1, c.num_classes});
  predict(image, logits);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const auto reader = vitc::io::SafetensorsReader::from_buffer(
        std::span<const std::byte>(reinterpret_cast<const std::byte*>(data), size));
    if (reader.metadata().contains(vitc::engine::kCompressedMetadataKey)) {
      auto compressed = vitc::engine::load_compressed(reader);
      auto& model = compressed.model;
      run_once(model.master_weights().config,
               [&](auto& image, auto& logits) { model.predict(image.view(), logits.view()); });
    } else if (reader.metadata().contains("vitc.quant")) {
      auto model = vitc::quant::load_quantized(reader);
      run_once(model.master_weights().config,
               [&](auto& image, auto& logits) { model.predict(image.view(), logits.view()); });
    } else {
      const auto weights = vitc::model::load_vit<float>(reader);
      run_once(weights.config, [&](auto& image, auto& logits) {
        vitc::model::ViTWorkspace<float> ws;
        vitc::model::vit_forward(weights, image.view(), logits.view(), ws);
      });
    }
  } catch (const vitc::Error&) {
    // Rejected with a clear error: the expected outcome for broken input.
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fuzz_checkpoint: unexpected exception: %s\n", e.what());
    std::abort();
  }
  return 0;
}
