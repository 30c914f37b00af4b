// SPDX-License-Identifier: Apache-2.0
#pragma once
// The shape of a Vision Transformer (timm's VisionTransformer / DeiT), as plain data.
//
// A ViT cuts an image into P x P patches, embeds each patch linearly into D channels, prepends a
// learned class token, adds a learned position embedding, runs `depth` pre-norm transformer blocks
//
//   x = x + proj(attention(norm1(x)))        attention: H heads, softmax(q k^T / sqrt(dqk)) v
//   x = x + fc2(gelu(fc1(norm2(x))))         GELU is the exact erf form
//
// and classifies the class token after a final LayerNorm with a linear head.
//
// Every block carries its own sizes (BlockConfig) because structured pruning removes heads, query/
// key channels, value channels and MLP neurons per block: a pruned model is still a ViT, only with
// uneven blocks. The fused qkv projection then has H*dqk + H*dqk + H*dv output rows laid out
//
//   [ q: head 0 .. head H-1 (dqk each) | k: head 0 .. H-1 (dqk each) | v: head 0 .. H-1 (dv each) ]
//
// which, when dqk == dv, is exactly timm's `qkv(x).reshape(B, N, 3, H, hd)` order; `proj` takes the
// H*dv concatenated head outputs. The embedding width D is shared by every block (the residual
// stream couples them).
//
// A configuration travels with a checkpoint as a JSON string under the safetensors `__metadata__`
// key kConfigMetadataKey ("vitc.config"); to_json()/from_json() convert.

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "vitcompress/core/error.hpp"
#include "vitcompress/core/tensor.hpp"

namespace vitc::model {

// The `__metadata__` key under which a checkpoint stores its ViTConfig as JSON.
inline constexpr const char* kConfigMetadataKey = "vitc.config";

struct BlockConfig {
  Index num_heads = 0;    // H
  Index qk_head_dim = 0;  // dqk: channels per head of queries and keys
  Index v_head_dim = 0;   // dv: channels per head of values (== dqk unless pruned separately)
  Index mlp_hidden = 0;   // neurons of fc1

  [[nodiscard]] Index qk_dim() const noexcept { return num_heads * qk_head_dim; }  // H*dqk
  [[nodiscard]] Index v_dim() const noexcept { return num_heads * v_head_dim; }    // H*dv
  // Output rows of the fused qkv projection: 2*H*dqk + H*dv.
  [[nodiscard]] Index qkv_rows() const noexcept { return 2 * qk_dim() + v_dim(); }

  friend bool operator==(const BlockConfig&, const BlockConfig&) = default;
};

struct ViTConfig {
  Index image_size = 224;  // square images of image_size x image_size pixels
  Index patch_size = 16;   // square patches; must divide image_size
  Index in_channels = 3;
  Index embed_dim = 768;  // D
  Index num_classes = 1000;
  double layer_norm_eps = 1e-6;  // timm DeiT uses 1e-6 (PyTorch's default is 1e-5)
  // Classify the class token (timm DeiT). Global average pooling (class_token = false) is not
  // implemented; validate() rejects it so that such a checkpoint is never run with wrong semantics.
  bool class_token = true;
  std::vector<BlockConfig> blocks;

  [[nodiscard]] Index depth() const noexcept { return static_cast<Index>(blocks.size()); }
  [[nodiscard]] Index grid_size() const noexcept {
    return patch_size > 0 ? image_size / patch_size : 0;
  }
  [[nodiscard]] Index num_patches() const noexcept { return grid_size() * grid_size(); }
  // Tokens per image: patches plus the class token.
  [[nodiscard]] Index num_tokens() const noexcept { return num_patches() + (class_token ? 1 : 0); }
  // Inputs of the patch embedding GEMM: C*P*P.
  [[nodiscard]] Index patch_dim() const noexcept { return in_channels * patch_size * patch_size; }

  // Throws ArgumentError naming the first field out of range.
  void validate() const;

  // Number of scalar parameters (every tensor ViTWeights holds).
  [[nodiscard]] std::int64_t parameter_count() const;
  // Multiply-accumulates of one image's forward pass: every GEMM (patch embedding, qkv, q k^T,
  // probabilities x v, proj, fc1, fc2, head); LayerNorm, softmax and GELU are not counted.
  [[nodiscard]] std::int64_t macs_per_image() const;

  [[nodiscard]] std::string to_json() const;
  // Parses what to_json() writes; throws FormatError naming the field on malformed JSON, missing or
  // mistyped fields, and ArgumentError (via validate()) on out-of-range values.
  [[nodiscard]] static ViTConfig from_json(const std::string& text);

  // Uniform ViT: every block has `num_heads` heads of embed_dim / num_heads channels and an MLP of
  // `mlp_hidden` neurons.
  [[nodiscard]] static ViTConfig uniform(Index image_size, Index patch_size, Index in_channels,
                                         Index embed_dim, Index depth, Index num_heads,
                                         Index mlp_hidden, Index num_classes);

  // timm's deit_{tiny,small,base}_patch16_224: 224x224x3, patch 16, depth 12, head dim 64,
  // MLP 4D, 1000 classes; D = 192 / 384 / 768 with 3 / 6 / 12 heads.
  [[nodiscard]] static ViTConfig deit_tiny() { return uniform(224, 16, 3, 192, 12, 3, 768, 1000); }
  [[nodiscard]] static ViTConfig deit_small() {
    return uniform(224, 16, 3, 384, 12, 6, 1536, 1000);
  }
  [[nodiscard]] static ViTConfig deit_base() {
    return uniform(224, 16, 3, 768, 12, 12, 3072, 1000);
  }
  // The small ViT trained on Fashion-MNIST and shipped with the library: 28x28x1, patch 7 (16
  // tokens + class token), D = 96, depth 6, 4 heads of 24, MLP 192, 10 classes.
  [[nodiscard]] static ViTConfig fashion_mnist_vit() {
    return uniform(28, 7, 1, 96, 6, 4, 192, 10);
  }

  friend bool operator==(const ViTConfig&, const ViTConfig&) = default;
};

// ---------------------------------------------------------------------------------------------

namespace detail {
inline void require_positive(Index value, const std::string& field) {
  if (value <= 0)
    VITC_THROW(
        ArgumentError("ViTConfig: " + field + " must be positive, got " + std::to_string(value)));
}
}  // namespace detail

inline void ViTConfig::validate() const {
  detail::require_positive(image_size, "image_size");
  detail::require_positive(patch_size, "patch_size");
  detail::require_positive(in_channels, "in_channels");
  detail::require_positive(embed_dim, "embed_dim");
  detail::require_positive(num_classes, "num_classes");
  // Generous bounds that keep every size product far inside int64.
  constexpr Index kMaxExtent = Index{1} << 20;
  const auto bounded = [&](Index v, const std::string& field) {
    if (v > kMaxExtent)
      VITC_THROW(ArgumentError("ViTConfig: " + field + " = " + std::to_string(v) +
                               " exceeds the supported maximum " + std::to_string(kMaxExtent)));
  };
  bounded(image_size, "image_size");
  bounded(in_channels, "in_channels");
  bounded(embed_dim, "embed_dim");
  bounded(num_classes, "num_classes");
  if (patch_size > image_size || image_size % patch_size != 0)
    VITC_THROW(ArgumentError("ViTConfig: patch_size " + std::to_string(patch_size) +
                             " must divide image_size " + std::to_string(image_size)));
  if (num_tokens() > (Index{1} << 16))
    VITC_THROW(ArgumentError("ViTConfig: image_size / patch_size gives " +
                             std::to_string(num_patches()) + " patches, more than supported"));
  if (!std::isfinite(layer_norm_eps) || layer_norm_eps <= 0.0)
    VITC_THROW(ArgumentError("ViTConfig: layer_norm_eps must be finite and positive"));
  if (!class_token)
    VITC_THROW(
        ArgumentError("ViTConfig: class_token = false (global average pooling) is not supported"));
  if (blocks.empty()) VITC_THROW(ArgumentError("ViTConfig: blocks must not be empty (depth 0)"));
  if (blocks.size() > 1024) VITC_THROW(ArgumentError("ViTConfig: blocks: depth exceeds 1024"));
  // Every weight tensor below 2^32 elements (16 GiB of float): far beyond any real ViT, and it
  // keeps parameter_count() and macs_per_image() inside int64 for every accepted config.
  constexpr Index kMaxElements = Index{1} << 32;
  const auto matrix = [&](Index rows, Index cols, const std::string& tensor) {
    if (rows * cols > kMaxElements)  // both factors < 2^31 here, so no overflow
      VITC_THROW(ArgumentError("ViTConfig: " + tensor + " would have " + std::to_string(rows) +
                               " x " + std::to_string(cols) + " elements, too many"));
  };
  if (patch_size > kMaxExtent / patch_size || patch_size * patch_size > kMaxExtent / in_channels)
    VITC_THROW(ArgumentError("ViTConfig: in_channels * patch_size^2 is too large"));
  matrix(embed_dim, patch_dim(), "patch_embed.proj.weight (embed_dim x in_channels*patch_size^2)");
  matrix(num_tokens(), embed_dim, "pos_embed (tokens x embed_dim)");
  matrix(num_classes, embed_dim, "head.weight (num_classes x embed_dim)");
  for (std::size_t i = 0; i < blocks.size(); ++i) {
    const BlockConfig& b = blocks[i];
    const std::string prefix = "blocks[" + std::to_string(i) + "].";
    detail::require_positive(b.num_heads, prefix + "num_heads");
    detail::require_positive(b.qk_head_dim, prefix + "qk_head_dim");
    detail::require_positive(b.v_head_dim, prefix + "v_head_dim");
    detail::require_positive(b.mlp_hidden, prefix + "mlp_hidden");
    bounded(b.num_heads, prefix + "num_heads");
    bounded(b.qk_head_dim, prefix + "qk_head_dim");
    bounded(b.v_head_dim, prefix + "v_head_dim");
    bounded(b.mlp_hidden, prefix + "mlp_hidden");
    if (b.qkv_rows() > kMaxExtent)
      VITC_THROW(ArgumentError("ViTConfig: " + prefix +
                               "num_heads * (2 * qk_head_dim + v_head_dim) is too large"));
    matrix(b.qkv_rows(), embed_dim, prefix + "qkv");
    matrix(b.mlp_hidden, embed_dim, prefix + "mlp_hidden x embed_dim");
  }
}

inline std::int64_t ViTConfig::parameter_count() const {
  const std::int64_t d = embed_dim;
  std::int64_t n = d * patch_dim() + d;  // patch_embed.proj
  n += d;                                // cls_token
  n += num_tokens() * d;                 // pos_embed
  for (const BlockConfig& b : blocks) {
    n += 2 * d;                            // norm1
    n += b.qkv_rows() * d + b.qkv_rows();  // attn.qkv
    n += d * b.v_dim() + d;                // attn.proj
    n += 2 * d;                            // norm2
    n += b.mlp_hidden * d + b.mlp_hidden;  // mlp.fc1
    n += d * b.mlp_hidden + d;             // mlp.fc2
  }
  n += 2 * d;                          // norm
  n += num_classes * d + num_classes;  // head
  return n;
}

inline std::int64_t ViTConfig::macs_per_image() const {
  const std::int64_t d = embed_dim, t = num_tokens();
  std::int64_t n = num_patches() * patch_dim() * d;
  for (const BlockConfig& b : blocks) {
    n += t * d * b.qkv_rows();                 // qkv
    n += b.num_heads * t * t * b.qk_head_dim;  // q k^T
    n += b.num_heads * t * t * b.v_head_dim;   // probabilities x v
    n += t * b.v_dim() * d;                    // proj
    n += 2 * t * d * b.mlp_hidden;             // fc1 + fc2
  }
  n += d * num_classes;  // head on the class token
  return n;
}

inline ViTConfig ViTConfig::uniform(Index image_size, Index patch_size, Index in_channels,
                                    Index embed_dim, Index depth, Index num_heads, Index mlp_hidden,
                                    Index num_classes) {
  if (num_heads <= 0 || embed_dim % num_heads != 0)
    VITC_THROW(ArgumentError("ViTConfig::uniform: num_heads " + std::to_string(num_heads) +
                             " must divide embed_dim " + std::to_string(embed_dim)));
  if (depth < 0) VITC_THROW(ArgumentError("ViTConfig::uniform: depth must be >= 0"));
  ViTConfig c;
  c.image_size = image_size;
  c.patch_size = patch_size;
  c.in_channels = in_channels;
  c.embed_dim = embed_dim;
  c.num_classes = num_classes;
  const Index hd = embed_dim / num_heads;
  c.blocks.assign(static_cast<std::size_t>(depth), BlockConfig{num_heads, hd, hd, mlp_hidden});
  return c;
}

inline std::string ViTConfig::to_json() const {
  nlohmann::json j;
  j["format"] = "vitc.vit";
  j["version"] = 1;
  j["image_size"] = image_size;
  j["patch_size"] = patch_size;
  j["in_channels"] = in_channels;
  j["embed_dim"] = embed_dim;
  j["num_classes"] = num_classes;
  j["layer_norm_eps"] = layer_norm_eps;
  j["class_token"] = class_token;
  nlohmann::json bs = nlohmann::json::array();
  for (const BlockConfig& b : blocks)
    bs.push_back({{"num_heads", b.num_heads},
                  {"qk_head_dim", b.qk_head_dim},
                  {"v_head_dim", b.v_head_dim},
                  {"mlp_hidden", b.mlp_hidden}});
  j["blocks"] = std::move(bs);
  return j.dump();
}

namespace detail {
inline const nlohmann::json& config_field(const nlohmann::json& j, const char* key,
                                          const std::string& where) {
  auto it = j.find(key);
  if (it == j.end())
    VITC_THROW(FormatError(std::string(kConfigMetadataKey) + ": missing field " + where + key));
  return *it;
}
inline Index config_int(const nlohmann::json& j, const char* key, const std::string& where = "") {
  const nlohmann::json& v = config_field(j, key, where);
  if (!v.is_number_integer())
    VITC_THROW(FormatError(std::string(kConfigMetadataKey) + ": field " + where + key +
                           " must be an integer"));
  return v.get<Index>();
}
}  // namespace detail

inline ViTConfig ViTConfig::from_json(const std::string& text) {
  const std::string key = kConfigMetadataKey;
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) VITC_THROW(FormatError(key + ": not valid JSON"));
  if (!j.is_object()) VITC_THROW(FormatError(key + ": expected a JSON object"));
  if (auto f = j.find("format"); f != j.end() && (!f->is_string() || *f != "vitc.vit"))
    VITC_THROW(FormatError(key + ": field format must be \"vitc.vit\""));
  if (auto v = j.find("version"); v != j.end() && (!v->is_number_integer() || *v != 1))
    VITC_THROW(FormatError(key + ": unsupported version (this library reads version 1)"));
  ViTConfig c;
  c.image_size = detail::config_int(j, "image_size");
  c.patch_size = detail::config_int(j, "patch_size");
  c.in_channels = detail::config_int(j, "in_channels");
  c.embed_dim = detail::config_int(j, "embed_dim");
  c.num_classes = detail::config_int(j, "num_classes");
  if (auto e = j.find("layer_norm_eps"); e != j.end()) {
    if (!e->is_number()) VITC_THROW(FormatError(key + ": field layer_norm_eps must be a number"));
    c.layer_norm_eps = e->get<double>();
  }
  if (auto t = j.find("class_token"); t != j.end()) {
    if (!t->is_boolean()) VITC_THROW(FormatError(key + ": field class_token must be a boolean"));
    c.class_token = t->get<bool>();
  }
  const nlohmann::json& bs = detail::config_field(j, "blocks", "");
  if (!bs.is_array()) VITC_THROW(FormatError(key + ": field blocks must be an array"));
  if (bs.size() > 4096) VITC_THROW(FormatError(key + ": field blocks has too many entries"));
  for (std::size_t i = 0; i < bs.size(); ++i) {
    const std::string where = "blocks[" + std::to_string(i) + "].";
    if (!bs[i].is_object()) VITC_THROW(FormatError(key + ": " + where + " must be an object"));
    BlockConfig b;
    b.num_heads = detail::config_int(bs[i], "num_heads", where);
    b.qk_head_dim = detail::config_int(bs[i], "qk_head_dim", where);
    b.v_head_dim = detail::config_int(bs[i], "v_head_dim", where);
    b.mlp_hidden = detail::config_int(bs[i], "mlp_hidden", where);
    c.blocks.push_back(b);
  }
  c.validate();
  return c;
}

}  // namespace vitc::model
