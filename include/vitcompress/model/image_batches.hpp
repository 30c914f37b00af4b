// SPDX-License-Identifier: Apache-2.0
#pragma once
// Turning a labelled set of 8-bit grey images into float mini-batches: normalisation, and the
// light augmentation that helps a small ViT on Fashion-MNIST (horizontal flips and translations
// by a few pixels with background fill). Every random choice comes from the caller's generator,
// so a seed reproduces an epoch exactly.

#include <cstdint>
#include <random>
#include <span>
#include <string>

#include "vitcompress/core/error.hpp"
#include "vitcompress/core/tensor.hpp"

namespace vitc::model {

// Images [N, H, W] (one channel) and their labels [N]; views, the owner keeps the data.
struct LabeledImages {
  TensorView<const std::uint8_t, 3> images;
  TensorView<const std::uint8_t, 1> labels;

  [[nodiscard]] Index size() const noexcept { return images.extent(0); }
  void validate() const {
    if (labels.extent(0) != images.extent(0))
      VITC_THROW(ShapeError("labels: " + std::to_string(labels.extent(0)) + " labels for " +
                            std::to_string(images.extent(0)) + " images"));
  }
};

// x ↦ (x / 255 − mean) / std. Defaults are Fashion-MNIST's training-set statistics.
struct ImageNormalization {
  float mean = 0.2860f;
  float std = 0.3530f;
};

struct Augmentation {
  bool horizontal_flip = false;  // mirror with probability 1/2
  int max_shift = 0;             // translate by [−max_shift, max_shift] pixels in x and y
};

// A uniform integer in [0, n) from a 64-bit generator (n small; the modulo bias is < 2^-50).
inline Index uniform_index(std::mt19937_64& rng, Index n) {
  return static_cast<Index>(rng() % static_cast<std::uint64_t>(n));
}

// Writes images[indices[b]] into out[b, 0, :, :] normalised, augmented when `rng` is given.
inline void make_image_batch(TensorView<const std::uint8_t, 3> images,
                             std::span<const Index> indices, const ImageNormalization& norm,
                             const Augmentation& augment, std::mt19937_64* rng,
                             TensorView<float, 4> out) {
  const Index h = images.extent(1), w = images.extent(2);
  if (out.extent(0) != static_cast<Index>(indices.size()) || out.extent(1) != 1 ||
      out.extent(2) != h || out.extent(3) != w)
    VITC_THROW(ShapeError("image batch: expected [" + std::to_string(indices.size()) + ", 1, " +
                          std::to_string(h) + ", " + std::to_string(w) + "], got " +
                          vitc::detail::shape_string(out.shape())));
  if (augment.max_shift < 0 || augment.max_shift >= h || augment.max_shift >= w)
    VITC_THROW(ArgumentError("augmentation max_shift must be in [0, image size)"));
  const float scale = 1.0f / (255.0f * norm.std);
  const float offset = -norm.mean / norm.std;
  for (std::size_t b = 0; b < indices.size(); ++b) {
    const Index n = indices[b];
    if (n < 0 || n >= images.extent(0))
      VITC_THROW(ArgumentError("image index " + std::to_string(n) + " out of range"));
    bool flip = false;
    Index dy = 0, dx = 0;
    if (rng) {
      if (augment.horizontal_flip) flip = ((*rng)() & 1) != 0;
      if (augment.max_shift > 0) {
        const Index span = 2 * augment.max_shift + 1;
        dy = uniform_index(*rng, span) - augment.max_shift;
        dx = uniform_index(*rng, span) - augment.max_shift;
      }
    }
    const auto src = images[n];
    auto dst = out[static_cast<Index>(b)][0];
    for (Index y = 0; y < h; ++y) {
      const Index sy = y - dy;
      for (Index x = 0; x < w; ++x) {
        Index sx = x - dx;
        if (flip) sx = w - 1 - sx;
        const bool inside = sy >= 0 && sy < h && sx >= 0 && sx < w;
        const float pixel = inside ? static_cast<float>(src(sy, sx)) : 0.0f;
        dst(y, x) = pixel * scale + offset;
      }
    }
  }
}

}  // namespace vitc::model
