// SPDX-License-Identifier: Apache-2.0
#pragma once
// Pruning a ViT physically: from ViTWeights and a PruningPlan to a smaller ViTWeights.
//
// apply_pruning() gathers the kept rows, columns and entries of every tensor (dependency graph:
// Shrink::kept_indices) into a ViTWeights whose config carries the new per-block sizes
// (pruned_config(): heads, query/key and value head dims, MLP hidden size, embedding width; removed
// blocks are dropped and the remaining ones renumbered). The result is an ordinary ViT: vit_forward
// runs it, save_vit writes it under timm names with its config in the metadata, and load_vit reads
// it back with its own head counts, with no patching of head counts or head sizes.
//
// Kept channels stay in their original order, so the qkv rows stay [q | k | v], head-major. When a
// block's query/key head size shrinks from dqk to dqk', the attention scale 1/sqrt(dqk) of the
// forward pass would change with it; the kept query rows (weight and bias) are multiplied by
// sqrt(dqk'/dqk) so that the scores q·k/sqrt(dqk') equal what they were. Removing units whose
// importance is exactly zero (every weight of the unit zero) leaves the logits unchanged for heads,
// head dimensions, MLP units and whole blocks. It does not for the embedding dimension: LayerNorm
// normalizes over the channels that remain, so even an all-zero channel shifts the mean and
// variance when removed.

#include <array>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "vitcompress/core/error.hpp"
#include "vitcompress/core/tensor.hpp"
#include "vitcompress/model/vit_config.hpp"
#include "vitcompress/model/vit_weights.hpp"
#include "vitcompress/prune/dependency_graph.hpp"
#include "vitcompress/prune/pruner.hpp"
#include "vitcompress/prune/score_groups.hpp"
#include "vitcompress/prune/vit_graph.hpp"

namespace vitc::prune {

// The parameters of a ViT as named tensors for score_groups() (views into `w`).
template <class T>
[[nodiscard]] std::vector<ParamTensor<T>> param_tensors(const model::ViTWeights<T>& w) {
  std::vector<ParamTensor<T>> out;
  for (auto& p : w.parameters()) out.push_back({p.name, p.shape, p.values});
  return out;
}

namespace detail {

// dst = src restricted to kept[d] along every dimension d.
template <class T, std::size_t Rank>
void gather(TensorView<const T, Rank> src, const std::vector<std::vector<Index>>& kept,
            TensorView<T, Rank> dst, const std::string& name) {
  for (std::size_t d = 0; d < Rank; ++d)
    if (static_cast<Index>(kept[d].size()) != dst.extent(d))
      VITC_THROW(ShapeError(name + ": keeps " + std::to_string(kept[d].size()) +
                            " indices of dimension " + std::to_string(d) + ", the pruned config " +
                            std::to_string(dst.extent(d))));
  const Index n = dst.size();
  std::array<Index, Rank> idx{};
  for (Index i = 0; i < n; ++i) {
    Index rest = i, from = 0, to = 0;
    for (std::size_t d = Rank; d-- > 0;) {
      idx[d] = rest % dst.extent(d);
      rest /= dst.extent(d);
    }
    for (std::size_t d = 0; d < Rank; ++d) {
      from += kept[d][static_cast<std::size_t>(idx[d])] * src.stride(d);
      to += idx[d] * dst.stride(d);
    }
    dst.data()[to] = src.data()[from];
  }
}

// "blocks.<j>.rest" of the pruned model -> "blocks.<kept[j]>.rest" of the original.
inline std::string original_name(const std::string& name, const std::vector<std::size_t>& kept) {
  if (!name.starts_with("blocks.")) return name;
  const std::size_t dot = name.find('.', 7);
  const std::size_t j = std::stoul(name.substr(7, dot - 7));
  return "blocks." + std::to_string(kept.at(j)) + name.substr(dot);
}

}  // namespace detail

// The pruned model (see the file comment). `weights.config` must equal `graph.config`
// (ArgumentError otherwise); ShapeError if a tensor disagrees with the config.
template <class T>
[[nodiscard]] model::ViTWeights<T> apply_pruning(const model::ViTWeights<T>& weights,
                                                 const ViTGraph& graph, const PruningPlan& plan) {
  weights.check_shapes();
  if (!(weights.config == graph.config))
    VITC_THROW(ArgumentError("apply_pruning: the weights' config differs from the graph's"));
  if (plan.removed.size() != graph.graph.groups().size())
    VITC_THROW(ArgumentError("apply_pruning: the plan was made for another graph"));
  const DependencyGraph::Shrink shrink = plan.shrink(graph.graph);
  model::ViTWeights<T> out(pruned_config(graph, shrink));
  std::vector<std::size_t> kept_blocks;
  for (std::size_t i = 0; i < graph.ids.blocks.size(); ++i)
    if (!shrink.scope_removed(graph.ids.blocks[i].scope)) kept_blocks.push_back(i);
  out.for_each([&](const std::string& name, auto dst) {
    constexpr std::size_t kRank = decltype(dst)::kRank;
    const std::string from = detail::original_name(name, kept_blocks);
    const int p = graph.graph.find_param(from);
    if (p < 0)
      VITC_THROW(ArgumentError("apply_pruning: the graph has no parameter '" + from + "'"));
    std::vector<std::vector<Index>> kept(kRank);
    for (std::size_t d = 0; d < kRank; ++d) kept[d] = shrink.kept_indices(p, static_cast<int>(d));
    bool found = false;
    weights.for_each([&](const std::string& old_name, auto src) {
      if constexpr (decltype(src)::kRank == kRank) {
        if (old_name == from) {
          detail::gather(src, kept, dst, name);
          found = true;
        }
      }
    });
    if (!found) VITC_THROW(ArgumentError("apply_pruning: no tensor '" + from + "' in the weights"));
  });
  for (std::size_t i = 0; i < kept_blocks.size(); ++i) {
    const Index before = graph.config.blocks[kept_blocks[i]].qk_head_dim;
    const model::BlockConfig& b = out.config.blocks[i];
    if (b.qk_head_dim == before) continue;
    const double factor =
        std::sqrt(static_cast<double>(b.qk_head_dim) / static_cast<double>(before));
    auto& qkv = out.blocks[i].qkv;
    for (Index r = 0; r < b.qk_dim(); ++r) {
      for (Index c = 0; c < out.config.embed_dim; ++c)
        qkv.weight(r, c) = static_cast<T>(static_cast<double>(qkv.weight(r, c)) * factor);
      qkv.bias(r) = static_cast<T>(static_cast<double>(qkv.bias(r)) * factor);
    }
  }
  return out;
}

}  // namespace vitc::prune
