// SPDX-License-Identifier: Apache-2.0
#pragma once
// Shared by the prune tests: small ViT configurations and non-trivial random weights.

#include <cstdint>
#include <string>

#include "vitcompress/core/tensor.hpp"
#include "vitcompress/model/vit_config.hpp"
#include "vitcompress/model/vit_weights.hpp"

namespace vitc::test {

// 8x8 images, 2 channels, patch 4 (4 patches + class token), D = 8, two uneven blocks, 3 classes.
inline model::ViTConfig uneven_config() {
  model::ViTConfig c;
  c.image_size = 8;
  c.patch_size = 4;
  c.in_channels = 2;
  c.embed_dim = 8;
  c.num_classes = 3;
  c.blocks = {model::BlockConfig{2, 3, 4, 10}, model::BlockConfig{3, 2, 3, 6}};
  return c;
}

// Every parameter non-trivial: weights N(0, 0.4^2), LayerNorm gains 1 + N(0, 0.2^2), biases and
// embeddings N(0, 0.2^2).
template <class T>
model::ViTWeights<T> random_weights(const model::ViTConfig& c, std::uint64_t seed) {
  model::ViTWeights<T> w(c);
  model::detail::NormalSampler rng(seed);
  w.for_each([&](const std::string& name, auto view) {
    const bool gain =
        name.ends_with("norm1.weight") || name.ends_with("norm2.weight") || name == "norm.weight";
    const bool small = name.ends_with("bias") || name == "cls_token" || name == "pos_embed";
    for (T& v : view.span())
      v = static_cast<T>(gain ? 1.0 + 0.2 * rng.next() : (small ? 0.2 : 0.4) * rng.next());
  });
  return w;
}

template <class T>
Tensor<T, 4> random_images(const model::ViTConfig& c, Index batch, std::uint64_t seed) {
  Tensor<T, 4> x({batch, c.in_channels, c.image_size, c.image_size});
  model::detail::NormalSampler rng(seed);
  for (T& v : x.span()) v = static_cast<T>(rng.next());
  return x;
}

}  // namespace vitc::test
