// SPDX-License-Identifier: Apache-2.0
#pragma once
// ViT checkpoints: ViTWeights to and from safetensors files under timm's parameter names.
//
// A checkpoint written by save_vit() carries its ViTConfig as JSON under the `__metadata__` key
// "vitc.config" (plus "format": "pt", which Hugging Face loaders expect); load_vit() uses it when
// present. A checkpoint from elsewhere (timm's `save_file(model.state_dict())`) has no config, so
// load_vit() infers what the shapes determine:
//
//   embed_dim, in_channels, patch_size   patch_embed.proj.weight [D, C, P, P]
//   image_size                           pos_embed [1, 1 + (image/P)^2, D]
//   depth                                blocks.0 .. blocks.{depth-1} present
//   H*dv and H*dqk per block             attn.proj.weight [D, H*dv], attn.qkv.weight [2*H*dqk +
//   H*dv, D] mlp_hidden per block                 mlp.fc1.weight [hidden, D] num_classes
//   head.weight [classes, D]
//
// and takes the head counts from LoadOptions (one count for every block, or one per block), by
// default H*dv / 64 (DeiT's head dim). LayerNorm eps is 1e-6 unless LoadOptions says otherwise.
//
// Loading checks every tensor: present (FormatError), shape equal to what the config implies
// (ShapeError), finite (ArgumentError), each message naming the tensor. A tensor the model does
// not use is an error (FormatError) unless allow_unknown_tensors is set, so that nothing is ignored
// silently; distilled DeiT (`dist_token`, `head_dist.*`) is out of scope and says so. Weights are
// read as float from F32, F16 or BF16 (or as double from F64 or F32).

#include <cmath>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "vitcompress/core/error.hpp"
#include "vitcompress/core/tensor.hpp"
#include "vitcompress/io/safetensors.hpp"
#include "vitcompress/model/vit_config.hpp"
#include "vitcompress/model/vit_weights.hpp"

namespace vitc::model {

struct LoadOptions {
  // Heads per block when the checkpoint has no "vitc.config": empty = H*dv / head_dim; one value =
  // the same for every block; otherwise one per block.
  std::vector<Index> num_heads;
  Index head_dim = 64;
  double layer_norm_eps = 1e-6;  // not recorded by timm checkpoints
  bool allow_unknown_tensors = false;
};

// The config of the checkpoint: its "vitc.config" metadata if present, otherwise inferred from the
// tensor shapes as described above. Throws FormatError (missing tensor, bad rank, malformed
// metadata) or ArgumentError (inconsistent sizes), naming the tensor or field.
[[nodiscard]] ViTConfig infer_vit_config(const io::SafetensorsReader& reader,
                                         const LoadOptions& options = {});

template <class T = float>
[[nodiscard]] ViTWeights<T> load_vit(const io::SafetensorsReader& reader,
                                     const LoadOptions& options = {});

template <class T = float>
[[nodiscard]] ViTWeights<T> load_vit(const std::filesystem::path& path,
                                     const LoadOptions& options = {}) {
  return load_vit<T>(io::SafetensorsReader::open(path), options);
}

// A writer holding every parameter (dtype of T) and the config metadata, plus `extra_metadata`;
// callers may add more tensors before writing or serializing it.
template <class T>
[[nodiscard]] io::SafetensorsWriter vit_writer(
    const ViTWeights<T>& weights, const std::map<std::string, std::string>& extra_metadata = {});

// Writes `weights` (with the config metadata and `extra_metadata`) to `path`.
template <class T>
void save_vit(const std::filesystem::path& path, const ViTWeights<T>& weights,
              const std::map<std::string, std::string>& extra_metadata = {}) {
  vit_writer(weights, extra_metadata).write(path);
}

// ---------------------------------------------------------------------------------------------

namespace detail {

inline const io::TensorInfo& required_tensor(const io::SafetensorsReader& reader,
                                             const std::string& name, std::size_t rank) {
  if (!reader.contains(name))
    VITC_THROW(FormatError(reader.source() + ": missing tensor '" + name + "'"));
  const io::TensorInfo& info = reader.info(name);
  if (info.shape.size() != rank)
    VITC_THROW(ShapeError(reader.source() + ": tensor '" + name + "' has rank " +
                          std::to_string(info.shape.size()) + ", expected " +
                          std::to_string(rank)));
  return info;
}

inline std::string shape_string(const std::vector<Index>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

}  // namespace detail

inline ViTConfig infer_vit_config(const io::SafetensorsReader& reader, const LoadOptions& options) {
  const auto& meta = reader.metadata();
  if (const auto it = meta.find(kConfigMetadataKey); it != meta.end())
    return ViTConfig::from_json(it->second);

  const std::string& src = reader.source();
  const auto fail = [&](const std::string& tensor, const std::string& why) {
    VITC_THROW(ArgumentError(src + ": tensor '" + tensor + "' " + why));
  };
  ViTConfig c;
  c.layer_norm_eps = options.layer_norm_eps;
  const auto& pw = detail::required_tensor(reader, "patch_embed.proj.weight", 4).shape;
  if (pw[2] != pw[3]) fail("patch_embed.proj.weight", "has non-square patches");
  c.embed_dim = pw[0];
  c.in_channels = pw[1];
  c.patch_size = pw[2];
  if (!reader.contains("cls_token"))
    VITC_THROW(FormatError(src + ": missing tensor 'cls_token' (ViTs without a class token are "
                                 "not supported)"));
  const auto& pos = detail::required_tensor(reader, "pos_embed", 3).shape;
  const Index patches = pos[1] - 1;
  const auto grid =
      static_cast<Index>(std::llround(std::sqrt(static_cast<double>(std::max<Index>(patches, 0)))));
  if (patches <= 0 || grid * grid != patches)
    fail("pos_embed",
         "has " + std::to_string(pos[1]) + " positions, not 1 + a square number of patches");
  c.image_size = grid * c.patch_size;
  const auto& hw = detail::required_tensor(reader, "head.weight", 2).shape;
  c.num_classes = hw[0];

  Index depth = 0;
  while (reader.contains("blocks." + std::to_string(depth) + ".attn.qkv.weight")) ++depth;
  if (depth == 0) VITC_THROW(FormatError(src + ": missing tensor 'blocks.0.attn.qkv.weight'"));
  if (options.num_heads.size() > 1 && static_cast<Index>(options.num_heads.size()) != depth)
    VITC_THROW(ArgumentError("LoadOptions: num_heads has " +
                             std::to_string(options.num_heads.size()) + " entries for " +
                             std::to_string(depth) + " blocks"));
  if (options.num_heads.empty() && options.head_dim <= 0)
    VITC_THROW(ArgumentError("LoadOptions: head_dim must be positive"));
  for (Index i = 0; i < depth; ++i) {
    const std::string p = "blocks." + std::to_string(i) + ".";
    const Index rows = detail::required_tensor(reader, p + "attn.qkv.weight", 2).shape[0];
    const Index vdim = detail::required_tensor(reader, p + "attn.proj.weight", 2).shape[1];
    const Index hidden = detail::required_tensor(reader, p + "mlp.fc1.weight", 2).shape[0];
    BlockConfig b;
    if (options.num_heads.empty()) {
      if (vdim % options.head_dim != 0)
        fail(p + "attn.proj.weight",
             "has " + std::to_string(vdim) + " input channels, not a multiple of head_dim " +
                 std::to_string(options.head_dim) + "; give the head counts in LoadOptions");
      b.num_heads = vdim / options.head_dim;
    } else {
      b.num_heads =
          options.num_heads[options.num_heads.size() == 1 ? 0 : static_cast<std::size_t>(i)];
      if (b.num_heads <= 0) VITC_THROW(ArgumentError("LoadOptions: num_heads must be positive"));
    }
    if (b.num_heads <= 0 || vdim % b.num_heads != 0)
      fail(p + "attn.proj.weight", "has " + std::to_string(vdim) +
                                       " input channels, not divisible into " +
                                       std::to_string(b.num_heads) + " heads");
    b.v_head_dim = vdim / b.num_heads;
    const Index qk2 = rows - vdim;
    if (qk2 <= 0 || qk2 % (2 * b.num_heads) != 0)
      fail(p + "attn.qkv.weight",
           "has " + std::to_string(rows) + " rows, not 2*H*dqk + H*dv with H = " +
               std::to_string(b.num_heads) + " and H*dv = " + std::to_string(vdim));
    b.qk_head_dim = qk2 / (2 * b.num_heads);
    b.mlp_hidden = hidden;
    c.blocks.push_back(b);
  }
  c.validate();
  return c;
}

template <class T>
ViTWeights<T> load_vit(const io::SafetensorsReader& reader, const LoadOptions& options) {
  const ViTConfig config = infer_vit_config(reader, options);
  ViTWeights<T> w(config);
  const std::string& src = reader.source();
  std::set<std::string> expected;
  detail::for_each_tensor(w, [&](const std::string& name, auto& tensor) {
    using TensorType = std::remove_cvref_t<decltype(tensor)>;
    constexpr std::size_t kRank = TensorType::kRank;
    expected.insert(name);
    const io::TensorInfo& info = detail::required_tensor(reader, name, kRank);
    const std::vector<Index> want(tensor.shape().begin(), tensor.shape().end());
    if (info.shape != want)
      VITC_THROW(ShapeError(src + ": tensor '" + name + "' has shape " +
                            detail::shape_string(info.shape) + ", expected " +
                            detail::shape_string(want) + " for the model's config"));
    tensor = reader.template read<T, kRank>(name);
    for (const T& v : tensor.span())
      if (!std::isfinite(static_cast<double>(v)))
        VITC_THROW(ArgumentError(src + ": tensor '" + name + "' contains a NaN or an infinity"));
  });
  if (!options.allow_unknown_tensors) {
    for (const io::TensorInfo& t : reader.tensors()) {
      if (expected.contains(t.name)) continue;
      if (t.name == "dist_token" || t.name.rfind("head_dist.", 0) == 0)
        VITC_THROW(FormatError(src + ": tensor '" + t.name +
                               "' belongs to a distilled DeiT, which is not supported (drop "
                               "dist_token and head_dist.*, or set allow_unknown_tensors)"));
      VITC_THROW(FormatError(src + ": unknown tensor '" + t.name +
                             "' (not a parameter of a timm ViT with this config; set "
                             "allow_unknown_tensors to ignore it)"));
    }
  }
  return w;
}

template <class T>
io::SafetensorsWriter vit_writer(const ViTWeights<T>& weights,
                                 const std::map<std::string, std::string>& extra_metadata) {
  weights.check_shapes();
  io::SafetensorsWriter writer;
  writer.set_metadata("format", "pt");
  for (const auto& [key, value] : extra_metadata) writer.set_metadata(key, value);
  writer.set_metadata(kConfigMetadataKey, weights.config.to_json());
  weights.for_each([&](const std::string& name, const auto& view) { writer.add(name, view); });
  return writer;
}

}  // namespace vitc::model
