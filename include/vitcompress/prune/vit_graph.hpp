// SPDX-License-Identifier: Apache-2.0
#pragma once
// The network description and dependency graph of a ViT (timm VisionTransformer / DeiT).
//
// vit_description() writes the operators of vit_forward() (model/vit_forward.hpp) with timm's
// parameter names, so the graph's parameters are exactly the tensors of ViTWeights:
//
//   image -> patch_embed.proj -> cls_token -> pos_embed            (value "embed": the stream)
//   per block i, scope "blocks.i":
//     norm1 -> attn.qkv -> split [q | k | v] -> head_split x3 -> attn -> head_merge -> attn.proj
//     -> residual add;  norm2 -> mlp.fc1 (value "blocks.i.mlp.hidden") -> GELU -> mlp.fc2
//     -> residual add
//   norm -> head (class token only: rows = 1) -> logits (output)
//
// The groups the graph finds for a ViT of depth L (every block kept): "embed" (kResidual, D
// units); per block "blocks.i.attn.heads" (H units), "blocks.i.attn.qk_dims" (dqk),
// "blocks.i.attn.v_dims" (dv), "blocks.i.mlp.hidden" (kHidden, mlp_hidden units); and "depth"
// (L units, one per block). Its parameter and multiply-accumulate counts equal
// ViTConfig::parameter_count() and macs_per_image().
//
// ViTGraph also records the values and operators that pruned_config() needs to turn a Shrink back
// into a ViTConfig with per-block sizes.

#include <string>
#include <vector>

#include "vitcompress/core/error.hpp"
#include "vitcompress/model/vit_config.hpp"
#include "vitcompress/prune/dependency_graph.hpp"
#include "vitcompress/prune/network_description.hpp"

namespace vitc::prune {

struct ViTGraphIds {
  ValueId embed = -1;  // the patch-embedding output (first value of the residual stream)
  struct Block {
    std::string scope;    // "blocks.i"
    ValueId q = -1;       // query channels [H*dqk] (head-split)
    ValueId v = -1;       // value channels [H*dv] (head-split)
    ValueId hidden = -1;  // fc1 output [mlp_hidden]
    int attention = -1;   // the attention operator
  };
  std::vector<Block> blocks;
};

// The operator-level description of `config` (validated first). `ids`, if given, receives the
// values pruned_config() reads.
[[nodiscard]] inline NetworkDescription vit_description(const model::ViTConfig& config,
                                                        ViTGraphIds* ids = nullptr) {
  config.validate();
  const Index d = config.embed_dim, t = config.num_tokens();
  NetworkDescription n;
  ViTGraphIds local;
  const ValueId image = n.input("image", config.in_channels);
  ValueId x =
      n.patch_embed("patch_embed.proj", image, d, config.patch_size, "patch_embed.proj.weight",
                    "patch_embed.proj.bias", config.num_patches());
  n.name_value(x, "embed");
  local.embed = x;
  x = n.class_token("cls_token", x, "cls_token");
  x = n.position_embed("pos_embed", x, "pos_embed", t);
  for (std::size_t i = 0; i < config.blocks.size(); ++i) {
    const model::BlockConfig& b = config.blocks[i];
    const std::string scope = "blocks." + std::to_string(i);
    const std::string p = scope + ".";
    n.begin_scope(scope);
    const ValueId n1 = n.layer_norm(p + "norm1", x, p + "norm1.weight", p + "norm1.bias");
    const ValueId qkv =
        n.linear(p + "attn.qkv", n1, b.qkv_rows(), p + "attn.qkv.weight", p + "attn.qkv.bias", t);
    const auto parts = n.split(p + "attn.split", qkv, {b.qk_dim(), b.qk_dim(), b.v_dim()});
    const ValueId q = n.head_split(p + "attn.q", parts[0], b.num_heads);
    const ValueId k = n.head_split(p + "attn.k", parts[1], b.num_heads);
    const ValueId v = n.head_split(p + "attn.v", parts[2], b.num_heads);
    const ValueId o = n.attention(p + "attn", q, k, v, t);
    const ValueId merged = n.head_merge(p + "attn.merge", o);
    const ValueId proj =
        n.linear(p + "attn.proj", merged, d, p + "attn.proj.weight", p + "attn.proj.bias", t);
    x = n.residual_add(p + "add1", x, proj);
    const ValueId n2 = n.layer_norm(p + "norm2", x, p + "norm2.weight", p + "norm2.bias");
    const ValueId hidden =
        n.linear(p + "mlp.fc1", n2, b.mlp_hidden, p + "mlp.fc1.weight", p + "mlp.fc1.bias", t);
    n.name_value(hidden, p + "mlp.hidden");
    const ValueId act = n.elementwise(p + "mlp.act", hidden);
    const ValueId fc2 =
        n.linear(p + "mlp.fc2", act, d, p + "mlp.fc2.weight", p + "mlp.fc2.bias", t);
    x = n.residual_add(p + "add2", x, fc2);
    n.end_scope();
    local.blocks.push_back({scope, q, v, hidden, n.values()[static_cast<std::size_t>(o)].producer});
  }
  const ValueId z = n.layer_norm("norm", x, "norm.weight", "norm.bias");
  const ValueId logits = n.linear("head", z, config.num_classes, "head.weight", "head.bias", 1);
  n.output(logits);
  if (ids) *ids = std::move(local);
  return n;
}

struct ViTGraph {
  model::ViTConfig config;
  DependencyGraph graph;
  ViTGraphIds ids;
};

[[nodiscard]] inline ViTGraph vit_graph(const model::ViTConfig& config) {
  ViTGraphIds ids;
  NetworkDescription d = vit_description(config, &ids);
  return ViTGraph{config, DependencyGraph(std::move(d)), std::move(ids)};
}

// The ViTConfig of the model left by `shrink` (removed blocks dropped, per-block sizes). Throws
// ArgumentError if a block would lose every head or channel of a kind, or its heads would not keep
// equal sizes.
[[nodiscard]] inline model::ViTConfig pruned_config(const ViTGraph& g,
                                                    const DependencyGraph::Shrink& shrink) {
  model::ViTConfig c = g.config;
  c.embed_dim = shrink.value_size(g.ids.embed);
  c.blocks.clear();
  for (std::size_t i = 0; i < g.ids.blocks.size(); ++i) {
    const auto& b = g.ids.blocks[i];
    if (shrink.scope_removed(b.scope)) continue;
    model::BlockConfig bc;
    bc.num_heads = shrink.kept_heads(b.attention);
    const Index q = shrink.value_size(b.q), v = shrink.value_size(b.v);
    if (bc.num_heads == 0 || q % bc.num_heads != 0 || v % bc.num_heads != 0)
      VITC_THROW(ArgumentError(b.scope + ": pruning leaves " + std::to_string(bc.num_heads) +
                               " heads for " + std::to_string(q) + " query and " +
                               std::to_string(v) + " value channels"));
    bc.qk_head_dim = q / bc.num_heads;
    bc.v_head_dim = v / bc.num_heads;
    bc.mlp_hidden = shrink.value_size(b.hidden);
    c.blocks.push_back(bc);
  }
  if (c.embed_dim <= 0) VITC_THROW(ArgumentError("pruning leaves no embedding channel"));
  if (c.blocks.empty()) VITC_THROW(ArgumentError("pruning leaves no block"));
  c.validate();
  return c;
}

}  // namespace vitc::prune
