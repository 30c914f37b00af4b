// SPDX-License-Identifier: Apache-2.0
#pragma once
// The dependency graph: which channels of which tensors must be pruned together.
//
// Built from a NetworkDescription (network_description.hpp). Every channel of every value and every
// channel of every parameter dimension bound to a value is a node; each operator adds the
// equalities of its rule (a LayerNorm ties its input, output, gain and shift channel by channel; a
// residual add ties its three operands; a split ties each piece to its slice of the input;
// attention ties a query channel to its key channel and a value channel to the output channel...).
// A union-find over the nodes then yields *components*: the smallest sets of channels that can be
// removed without breaking a shape. This is what Torch-Pruning's DepGraph computes by tracing
// autograd and walking each group from a root layer (ANCHORS.md §2.1); here the description is
// explicit, so no tracing, no per-tensor special cases, and attention heads need no "unbind" hack.
//
// Components touching a network input or output are fixed. The others are sorted into groups by
// the set of values they touch (components of one group are interchangeable, e.g. the 96 channels
// of a residual stream, or the 192 neurons of one MLP), and each group is one of:
//
//   kResidual      channels that flow through a residual add: the embedding dimension of a ViT
//   kHidden        other channels, e.g. the hidden units of an MLP
//   kHeads         the heads of one attention operator: unit h holds every query/key and value
//                  channel of head h (q, k, v rows of qkv, columns of proj)
//   kQueryKeyDims  the per-head query/key dimension: unit j holds channel j of q and k in *every*
//                  head, so all heads keep one head size
//   kValueDims     the per-head value dimension, likewise
//   kDepth         scopes that can be removed whole: unit s is every tensor of scope s, when all of
//                  its operators lie on its own residual branches (a transformer block)
//
// A group lists its members: for every parameter dimension it touches, the unit of each index
// (kNoUnit where an index belongs to another group, e.g. the value rows of qkv in a query/key
// group). Scoring (score_groups.hpp) and ranking (pruner.hpp) work on groups; a Shrink applies a
// set of removed units and reports the resulting sizes, parameter and multiply-accumulate counts,
// and the indices each tensor keeps.
//
// The constructor checks the description and throws ShapeError (operand sizes disagree: a residual
// add of 96 and 95 channels, a split whose pieces do not sum to its input, a parameter used with
// two shapes, ...) or ArgumentError (wiring that cannot be pruned consistently: attention on values
// that are not split into heads, no declared output, ...), each naming the operator or parameter.
// Cost: O(channels · α) for the union-find plus O(Σ parameter extents) for the members.

#include <algorithm>
#include <cstdint>
#include <limits>
#include <map>
#include <numeric>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "vitcompress/core/error.hpp"
#include "vitcompress/core/tensor.hpp"
#include "vitcompress/prune/network_description.hpp"

namespace vitc::prune {

enum class GroupKind { kResidual, kHidden, kHeads, kQueryKeyDims, kValueDims, kDepth };

[[nodiscard]] inline const char* to_string(GroupKind k) noexcept {
  switch (k) {
    case GroupKind::kResidual:
      return "residual";
    case GroupKind::kHidden:
      return "hidden";
    case GroupKind::kHeads:
      return "heads";
    case GroupKind::kQueryKeyDims:
      return "qk_dims";
    case GroupKind::kValueDims:
      return "v_dims";
    case GroupKind::kDepth:
      return "depth";
  }
  return "unknown";
}

// Whether units of this kind are single channels (rounding to a multiple applies to them).
[[nodiscard]] inline bool is_channel_kind(GroupKind k) noexcept {
  return k == GroupKind::kResidual || k == GroupKind::kHidden || k == GroupKind::kQueryKeyDims ||
         k == GroupKind::kValueDims;
}

inline constexpr Index kNoUnit = -1;

struct GroupMember {
  int param = -1;  // index into DependencyGraph::params()
  int dim = 0;     // the pruned dimension; -1 = the whole tensor belongs to one unit (depth)
  bool input_side = false;  // the dimension is a layer's input (a linear weight's columns)
  std::vector<Index> unit_of_channel;  // one entry per index of `dim` (one entry when dim == -1)
};

struct Group {
  std::string name;
  GroupKind kind = GroupKind::kHidden;
  Index units = 0;
  std::vector<GroupMember> members;
  std::vector<std::string> unit_names;  // kDepth: the scope of each unit; otherwise empty
  // Equal for structurally identical groups: same kind, same member tensors (rank, pruned dim,
  // role, elements per channel, channels per unit); the unit count may differ.
  std::string isomorphism_key;
  int attention = -1;  // kHeads / k*Dims: the attention operator
};

// A parameter of the network (one entry per distinct name).
struct GraphParam {
  std::string name;
  std::vector<Index> shape;
  ParamRole role = ParamRole::kWeight;
  std::vector<int> ops;  // operators using it
};

class DependencyGraph {
 public:
  explicit DependencyGraph(NetworkDescription description);

  [[nodiscard]] const NetworkDescription& description() const noexcept { return desc_; }
  [[nodiscard]] const std::vector<GraphParam>& params() const noexcept { return params_; }
  [[nodiscard]] const std::vector<Group>& groups() const noexcept { return groups_; }
  // Index of the parameter / group with this name, or -1.
  [[nodiscard]] int find_param(std::string_view name) const;
  [[nodiscard]] int find_group(std::string_view name) const;
  // The group with this name; ArgumentError if there is none.
  [[nodiscard]] const Group& group(std::string_view name) const;

  // Scalars in all parameters, multiply-accumulates per input (see the description's rows).
  [[nodiscard]] std::int64_t parameter_count() const;
  [[nodiscard]] std::int64_t macs() const;

  // Sizes after removing units. Removing a unit removes its components (for kDepth: its scope);
  // units of different groups may share components (a head and a head dimension), which are then
  // removed once. Not thread-safe; cheap to copy.
  class Shrink {
   public:
    explicit Shrink(const DependencyGraph& graph);

    // Removes unit `unit` of group `group`; false if it was removed already. ArgumentError on a
    // bad index.
    bool remove(int group, Index unit);
    [[nodiscard]] bool removed(int group, Index unit) const;
    // Units of `group` not removed.
    [[nodiscard]] Index kept_units(int group) const;

    [[nodiscard]] Index value_size(ValueId v) const {
      return value_size_.at(static_cast<std::size_t>(v));
    }
    [[nodiscard]] bool scope_removed(const std::string& scope) const;
    [[nodiscard]] bool param_removed(int param) const;
    [[nodiscard]] Index param_extent(int param, int dim) const;
    [[nodiscard]] std::int64_t parameter_count() const;
    [[nodiscard]] std::int64_t macs() const;
    // Indices kept along `dim` of `param`, ascending (all of them for a dimension no group prunes).
    [[nodiscard]] std::vector<Index> kept_indices(int param, int dim) const;
    // Heads of an attention operator that keep channels.
    [[nodiscard]] Index kept_heads(int attention_op) const;

   private:
    const DependencyGraph* g_;
    std::vector<char> comp_removed_;
    std::vector<std::vector<char>> unit_removed_;
    std::vector<Index> kept_units_;
    std::vector<Index> value_size_;
    std::vector<std::vector<Index>> param_dim_size_;
    std::vector<char> scope_removed_;
  };

 private:
  friend class Shrink;

  struct Node {
    ValueId value = -1;  // value channel, or
    int param = -1;      // parameter dimension channel
    int dim = 0;
    Index index = 0;
  };

  void validate();
  void merge_params();
  void build_components();
  void build_groups();
  void build_depth_group();
  [[nodiscard]] std::int64_t op_macs(const OpInfo& op, const std::vector<Index>& size) const;
  [[nodiscard]] Index value_heads(ValueId v) const { return heads_[static_cast<std::size_t>(v)]; }

  NetworkDescription desc_;
  std::vector<GraphParam> params_;
  std::vector<int> param_of_use_;            // description param entry -> params_ index
  std::vector<Index> heads_;                 // per value: heads of a head-structured value, else 0
  std::vector<std::vector<int>> consumers_;  // per value: operators reading it

  std::vector<Node> nodes_;
  std::vector<int> value_base_;                   // first node of each value
  std::vector<std::vector<int>> param_dim_base_;  // first node of each bound param dim, or -1
  std::vector<int> comp_of_node_;                 // -1 = fixed
  std::vector<std::vector<int>> comp_nodes_;

  std::vector<Group> groups_;
  std::vector<std::vector<std::vector<int>>> unit_comps_;  // group -> unit -> components
  std::vector<std::string> scopes_;                        // every scope, in order
  std::vector<int> op_scope_;                              // per op: index into scopes_ or -1
  std::vector<int> depth_unit_scope_;                      // depth unit -> scope index
};

// ---------------------------------------------------------------------------------------------

namespace detail {

class UnionFind {
 public:
  explicit UnionFind(std::size_t n) : parent_(n) { std::iota(parent_.begin(), parent_.end(), 0); }
  int find(int x) {
    while (parent_[static_cast<std::size_t>(x)] != x) {
      auto& p = parent_[static_cast<std::size_t>(x)];
      p = parent_[static_cast<std::size_t>(p)];
      x = p;
    }
    return x;
  }
  void unite(int a, int b) {
    a = find(a);
    b = find(b);
    if (a != b) parent_[static_cast<std::size_t>(std::max(a, b))] = std::min(a, b);
  }

 private:
  std::vector<int> parent_;
};

inline std::string shape_text(const std::vector<Index>& s) {
  std::string out = "[";
  for (std::size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

}  // namespace detail

inline DependencyGraph::DependencyGraph(NetworkDescription description)
    : desc_(std::move(description)) {
  merge_params();
  validate();
  build_components();
  build_groups();
  build_depth_group();
}

inline void DependencyGraph::merge_params() {
  std::map<std::string, int> by_name;
  std::vector<int> first_op_of_use(desc_.params().size(), -1);
  for (std::size_t o = 0; o < desc_.ops().size(); ++o)
    for (int p : desc_.ops()[o].params)
      first_op_of_use[static_cast<std::size_t>(p)] = static_cast<int>(o);
  param_of_use_.assign(desc_.params().size(), -1);
  for (std::size_t u = 0; u < desc_.params().size(); ++u) {
    const ParamInfo& p = desc_.params()[u];
    const int op = first_op_of_use[u];
    auto [it, inserted] = by_name.emplace(p.name, static_cast<int>(params_.size()));
    if (inserted) {
      params_.push_back({p.name, p.shape, p.role, {}});
    } else {
      GraphParam& q = params_[static_cast<std::size_t>(it->second)];
      if (q.shape != p.shape)
        VITC_THROW(ShapeError("parameter '" + p.name + "' is used by '" +
                              desc_.ops()[static_cast<std::size_t>(q.ops.front())].name +
                              "' with shape " + detail::shape_text(q.shape) + " and by '" +
                              desc_.ops()[static_cast<std::size_t>(op)].name + "' with shape " +
                              detail::shape_text(p.shape)));
    }
    param_of_use_[u] = it->second;
    auto& ops = params_[static_cast<std::size_t>(it->second)].ops;
    if (std::find(ops.begin(), ops.end(), op) == ops.end()) ops.push_back(op);
  }
}

inline void DependencyGraph::validate() {
  const auto& values = desc_.values();
  const auto& ops = desc_.ops();
  if (desc_.outputs().empty())
    VITC_THROW(ArgumentError("the network description declares no output"));
  heads_.assign(values.size(), 0);
  consumers_.assign(values.size(), {});
  const auto size = [&](ValueId v) { return values[static_cast<std::size_t>(v)].size; };
  for (std::size_t o = 0; o < ops.size(); ++o) {
    const OpInfo& op = ops[o];
    const std::string at = std::string(to_string(op.kind)) + " '" + op.name + "'";
    for (ValueId x : op.inputs)
      consumers_[static_cast<std::size_t>(x)].push_back(static_cast<int>(o));
    for (ValueId y : op.outputs)
      if (size(y) <= 0)
        VITC_THROW(ShapeError(at + ": output '" + values[static_cast<std::size_t>(y)].name +
                              "' has " + std::to_string(size(y)) + " channels"));
    for (int p : op.params)
      for (Index e : desc_.params()[static_cast<std::size_t>(p)].shape)
        if (e <= 0)
          VITC_THROW(ShapeError(at + ": parameter '" +
                                desc_.params()[static_cast<std::size_t>(p)].name +
                                "' has an empty dimension"));
    switch (op.kind) {
      case OpKind::kResidualAdd:
        if (op.inputs[0] == op.inputs[1])
          VITC_THROW(ArgumentError(at + ": the stream and the branch are the same value"));
        if (size(op.inputs[0]) != size(op.inputs[1]))
          VITC_THROW(ShapeError(at + ": the stream has " + std::to_string(size(op.inputs[0])) +
                                " channels, the branch " + std::to_string(size(op.inputs[1]))));
        break;
      case OpKind::kSplit: {
        Index total = 0;
        for (Index s : op.sizes) total += s;
        if (total != size(op.inputs[0]))
          VITC_THROW(ShapeError(at + ": the pieces sum to " + std::to_string(total) +
                                " channels, the input has " + std::to_string(size(op.inputs[0]))));
        break;
      }
      case OpKind::kHeadSplit:
        if (op.heads <= 0 || size(op.inputs[0]) % op.heads != 0)
          VITC_THROW(ShapeError(at + ": " + std::to_string(op.heads) + " heads do not divide " +
                                std::to_string(size(op.inputs[0])) + " channels"));
        heads_[static_cast<std::size_t>(op.outputs[0])] = op.heads;
        break;
      case OpKind::kHeadMerge:
        if (heads_[static_cast<std::size_t>(op.inputs[0])] == 0)
          VITC_THROW(ArgumentError(at + ": the input '" +
                                   values[static_cast<std::size_t>(op.inputs[0])].name +
                                   "' is not split into heads"));
        break;
      case OpKind::kAttention: {
        const Index hq = heads_[static_cast<std::size_t>(op.inputs[0])];
        const Index hk = heads_[static_cast<std::size_t>(op.inputs[1])];
        const Index hv = heads_[static_cast<std::size_t>(op.inputs[2])];
        const char* names[3] = {"query", "key", "value"};
        for (int i = 0; i < 3; ++i)
          if (heads_[static_cast<std::size_t>(op.inputs[static_cast<std::size_t>(i)])] == 0)
            VITC_THROW(ArgumentError(
                at + ": the " + names[i] + " input '" +
                values[static_cast<std::size_t>(op.inputs[static_cast<std::size_t>(i)])].name +
                "' is not split into heads"));
        if (hq != hk || hq != hv)
          VITC_THROW(ShapeError(at + ": query, key and value have " + std::to_string(hq) + ", " +
                                std::to_string(hk) + " and " + std::to_string(hv) + " heads"));
        if (size(op.inputs[0]) != size(op.inputs[1]))
          VITC_THROW(ShapeError(at + ": the query has " + std::to_string(size(op.inputs[0])) +
                                " channels, the key " + std::to_string(size(op.inputs[1]))));
        if (op.rows <= 0) VITC_THROW(ShapeError(at + ": tokens must be positive"));
        heads_[static_cast<std::size_t>(op.outputs[0])] = hq;
        break;
      }
      case OpKind::kLinear:
      case OpKind::kPatchEmbed:
        if (op.rows <= 0) VITC_THROW(ShapeError(at + ": rows must be positive"));
        break;
      default:
        break;
    }
  }
}

inline void DependencyGraph::build_components() {
  const auto& values = desc_.values();
  const auto& ops = desc_.ops();
  // Nodes: value channels, then bound parameter dimension channels.
  value_base_.resize(values.size());
  for (std::size_t v = 0; v < values.size(); ++v) {
    value_base_[v] = static_cast<int>(nodes_.size());
    for (Index c = 0; c < values[v].size; ++c)
      nodes_.push_back({static_cast<ValueId>(v), -1, 0, c});
  }
  param_dim_base_.assign(params_.size(), {});
  for (std::size_t p = 0; p < params_.size(); ++p)
    param_dim_base_[p].assign(params_[p].shape.size(), -1);
  for (const OpInfo& op : ops)
    for (const ParamBinding& b : op.bindings) {
      const int p = param_of_use_[static_cast<std::size_t>(b.param)];
      int& base = param_dim_base_[static_cast<std::size_t>(p)][static_cast<std::size_t>(b.dim)];
      if (base >= 0) continue;
      base = static_cast<int>(nodes_.size());
      const Index extent =
          params_[static_cast<std::size_t>(p)].shape[static_cast<std::size_t>(b.dim)];
      for (Index i = 0; i < extent; ++i) nodes_.push_back({-1, p, b.dim, i});
    }

  detail::UnionFind uf(nodes_.size());
  const auto node = [&](ValueId v, Index c) {
    return value_base_[static_cast<std::size_t>(v)] + static_cast<int>(c);
  };
  const auto tie = [&](ValueId a, ValueId b, Index offset_a, Index offset_b, Index n) {
    for (Index c = 0; c < n; ++c) uf.unite(node(a, offset_a + c), node(b, offset_b + c));
  };
  const auto size = [&](ValueId v) { return values[static_cast<std::size_t>(v)].size; };
  for (const OpInfo& op : ops) {
    switch (op.kind) {
      case OpKind::kClassToken:
      case OpKind::kPositionEmbed:
      case OpKind::kLayerNorm:
      case OpKind::kElementwise:
      case OpKind::kHeadSplit:
      case OpKind::kHeadMerge:
        tie(op.inputs[0], op.outputs[0], 0, 0, size(op.outputs[0]));
        break;
      case OpKind::kResidualAdd:
        tie(op.inputs[0], op.outputs[0], 0, 0, size(op.outputs[0]));
        tie(op.inputs[1], op.outputs[0], 0, 0, size(op.outputs[0]));
        break;
      case OpKind::kSplit: {
        Index offset = 0;
        for (ValueId y : op.outputs) {
          tie(op.inputs[0], y, offset, 0, size(y));
          offset += size(y);
        }
        break;
      }
      case OpKind::kConcat: {
        Index offset = 0;
        for (ValueId x : op.inputs) {
          tie(x, op.outputs[0], 0, offset, size(x));
          offset += size(x);
        }
        break;
      }
      case OpKind::kAttention:
        tie(op.inputs[0], op.inputs[1], 0, 0, size(op.inputs[0]));
        tie(op.inputs[2], op.outputs[0], 0, 0, size(op.outputs[0]));
        break;
      default:
        break;
    }
    for (const ParamBinding& b : op.bindings) {
      const int p = param_of_use_[static_cast<std::size_t>(b.param)];
      const int base =
          param_dim_base_[static_cast<std::size_t>(p)][static_cast<std::size_t>(b.dim)];
      for (Index c = 0; c < size(b.value); ++c)
        uf.unite(base + static_cast<int>(c), node(b.value, c));
    }
  }

  // Fixed: anything coupled to a network input or output.
  std::set<int> fixed_roots;
  for (std::size_t o = 0; o < ops.size(); ++o)
    if (ops[o].kind == OpKind::kInput)
      for (Index c = 0; c < size(ops[o].outputs[0]); ++c)
        fixed_roots.insert(uf.find(node(ops[o].outputs[0], c)));
  for (ValueId y : desc_.outputs())
    for (Index c = 0; c < size(y); ++c) fixed_roots.insert(uf.find(node(y, c)));

  comp_of_node_.assign(nodes_.size(), -1);
  std::map<int, int> comp_of_root;
  for (std::size_t n = 0; n < nodes_.size(); ++n) {
    const int r = uf.find(static_cast<int>(n));
    if (fixed_roots.count(r)) continue;
    auto [it, inserted] = comp_of_root.emplace(r, static_cast<int>(comp_nodes_.size()));
    if (inserted) comp_nodes_.emplace_back();
    comp_nodes_[static_cast<std::size_t>(it->second)].push_back(static_cast<int>(n));
    comp_of_node_[n] = it->second;
  }
}

inline void DependencyGraph::build_groups() {
  const auto& values = desc_.values();
  const auto& ops = desc_.ops();
  // Classes of interchangeable components: same multiset of values touched.
  std::map<std::vector<ValueId>, std::vector<int>> classes;
  for (std::size_t c = 0; c < comp_nodes_.size(); ++c) {
    std::vector<ValueId> sig;
    for (int n : comp_nodes_[c])
      if (nodes_[static_cast<std::size_t>(n)].value >= 0)
        sig.push_back(nodes_[static_cast<std::size_t>(n)].value);
    std::sort(sig.begin(), sig.end());
    classes[sig].push_back(static_cast<int>(c));
  }
  const auto channel_in = [&](int comp, ValueId v) -> std::vector<Index> {
    std::vector<Index> cs;
    for (int n : comp_nodes_[static_cast<std::size_t>(comp)])
      if (nodes_[static_cast<std::size_t>(n)].value == v)
        cs.push_back(nodes_[static_cast<std::size_t>(n)].index);
    return cs;
  };
  const auto has_params = [&](const std::vector<int>& comps) {
    for (int n : comp_nodes_[static_cast<std::size_t>(comps.front())])
      if (nodes_[static_cast<std::size_t>(n)].param >= 0) return true;
    return false;
  };

  struct Pending {
    ValueId key;
    int order;
    Group group;
    std::vector<std::vector<int>> unit_comps;
  };
  std::vector<Pending> pending;
  // Attention classes: per attention op, the query/key class and the value class.
  struct AttentionSides {
    const std::vector<int>* qk = nullptr;
    const std::vector<int>* v = nullptr;
    ValueId key = 0;
  };
  std::map<int, AttentionSides> attention;

  for (const auto& [sig, comps] : classes) {
    if (comps.empty() || sig.empty() || !has_params(comps)) continue;
    // Is this class one side of an attention operator?
    int att = -1;
    bool query_side = false;
    for (std::size_t o = 0; o < ops.size(); ++o) {
      if (ops[o].kind != OpKind::kAttention) continue;
      const bool has_q = std::binary_search(sig.begin(), sig.end(), ops[o].inputs[0]);
      const bool has_v = std::binary_search(sig.begin(), sig.end(), ops[o].inputs[2]);
      if (!has_q && !has_v) continue;
      if (att >= 0 || (has_q && has_v))
        VITC_THROW(ArgumentError("attention '" + ops[o].name +
                                 "': its channels are coupled to those of another attention side "
                                 "(query/key and value, or two attention operators); heads cannot "
                                 "be pruned consistently"));
      att = static_cast<int>(o);
      query_side = has_q;
    }
    if (att >= 0) {
      auto& sides = attention[att];
      (query_side ? sides.qk : sides.v) = &comps;
      continue;
    }
    bool residual = false;
    for (ValueId v : sig) {
      const int producer = values[static_cast<std::size_t>(v)].producer;
      if (ops[static_cast<std::size_t>(producer)].kind == OpKind::kResidualAdd) residual = true;
      for (int c : consumers_[static_cast<std::size_t>(v)])
        if (ops[static_cast<std::size_t>(c)].kind == OpKind::kResidualAdd) residual = true;
    }
    const ValueId first = sig.front();
    std::vector<int> order(comps);
    std::vector<Index> first_channel(comp_nodes_.size(), 0);
    for (int c : comps) {
      auto cs = channel_in(c, first);
      first_channel[static_cast<std::size_t>(c)] = *std::min_element(cs.begin(), cs.end());
    }
    std::sort(order.begin(), order.end(), [&](int a, int b) {
      return first_channel[static_cast<std::size_t>(a)] <
             first_channel[static_cast<std::size_t>(b)];
    });
    Pending p;
    p.key = first;
    p.order = 3;
    p.group.name = values[static_cast<std::size_t>(first)].name;
    p.group.kind = residual ? GroupKind::kResidual : GroupKind::kHidden;
    for (int c : order) p.unit_comps.push_back({c});
    pending.push_back(std::move(p));
  }

  for (const auto& [att, sides] : attention) {
    const OpInfo& op = ops[static_cast<std::size_t>(att)];
    const Index heads = value_heads(op.inputs[0]);
    const auto head_index = [&](int comp, ValueId v) -> std::pair<Index, Index> {
      const auto cs = channel_in(comp, v);
      if (cs.size() != 1)
        VITC_THROW(ArgumentError("attention '" + op.name + "': channel " +
                                 std::to_string(cs.empty() ? -1 : cs[0]) + " of '" +
                                 values[static_cast<std::size_t>(v)].name +
                                 "' is coupled to another channel of the same input; the head "
                                 "structure cannot be kept"));
      const Index d = values[static_cast<std::size_t>(v)].size / heads;
      return {cs[0] / d, cs[0] % d};
    };
    ValueId key = std::numeric_limits<ValueId>::max();
    for (const std::vector<int>* side : {sides.qk, sides.v})
      if (side)
        for (int n : comp_nodes_[static_cast<std::size_t>(side->front())])
          if (nodes_[static_cast<std::size_t>(n)].value >= 0)
            key = std::min(key, nodes_[static_cast<std::size_t>(n)].value);
    Pending hp;
    hp.key = key;
    hp.order = 0;
    hp.group.name = op.name + ".heads";
    hp.group.kind = GroupKind::kHeads;
    hp.group.attention = att;
    hp.unit_comps.assign(static_cast<std::size_t>(heads), {});
    const bool both = sides.qk && sides.v;
    int side_order = 1;
    for (const std::vector<int>* side : {sides.qk, sides.v}) {
      const bool qk = side == sides.qk;
      const int this_order = side_order++;
      if (!side) continue;
      const ValueId v = op.inputs[qk ? 0 : 2];
      const Index d = values[static_cast<std::size_t>(v)].size / heads;
      Pending dp;
      dp.key = key;
      dp.order = this_order;
      dp.group.name = op.name + (qk ? ".qk_dims" : ".v_dims");
      dp.group.kind = qk ? GroupKind::kQueryKeyDims : GroupKind::kValueDims;
      dp.group.attention = att;
      dp.unit_comps.assign(static_cast<std::size_t>(d), {});
      for (int c : *side) {
        const auto [h, j] = head_index(c, v);
        dp.unit_comps[static_cast<std::size_t>(j)].push_back(c);
        hp.unit_comps[static_cast<std::size_t>(h)].push_back(c);
      }
      pending.push_back(std::move(dp));
    }
    if (both) pending.push_back(std::move(hp));
  }

  std::stable_sort(pending.begin(), pending.end(), [](const Pending& a, const Pending& b) {
    return a.key != b.key ? a.key < b.key : a.order < b.order;
  });

  // Members: every bound parameter dimension whose channels fall in a group.
  std::vector<std::vector<std::pair<int, Index>>> comp_units(comp_nodes_.size());
  for (std::size_t g = 0; g < pending.size(); ++g) {
    pending[g].group.units = static_cast<Index>(pending[g].unit_comps.size());
    for (std::size_t u = 0; u < pending[g].unit_comps.size(); ++u)
      for (int c : pending[g].unit_comps[u])
        comp_units[static_cast<std::size_t>(c)].push_back(
            {static_cast<int>(g), static_cast<Index>(u)});
  }
  std::vector<std::map<std::pair<int, int>, std::size_t>> member_index(pending.size());
  for (const OpInfo& op : ops)
    for (const ParamBinding& b : op.bindings) {
      const int p = param_of_use_[static_cast<std::size_t>(b.param)];
      const int base =
          param_dim_base_[static_cast<std::size_t>(p)][static_cast<std::size_t>(b.dim)];
      const Index extent =
          params_[static_cast<std::size_t>(p)].shape[static_cast<std::size_t>(b.dim)];
      for (Index i = 0; i < extent; ++i) {
        const int comp = comp_of_node_[static_cast<std::size_t>(base + i)];
        if (comp < 0) continue;
        for (const auto& [g, u] : comp_units[static_cast<std::size_t>(comp)]) {
          Group& grp = pending[static_cast<std::size_t>(g)].group;
          auto [it, inserted] = member_index[static_cast<std::size_t>(g)].emplace(
              std::pair{p, b.dim}, grp.members.size());
          if (inserted)
            grp.members.push_back({p, b.dim, b.input_side,
                                   std::vector<Index>(static_cast<std::size_t>(extent), kNoUnit)});
          grp.members[it->second].unit_of_channel[static_cast<std::size_t>(i)] = u;
        }
      }
    }

  for (Pending& p : pending) {
    if (p.group.members.empty()) continue;
    // Members in parameter order, so the listing is stable.
    std::stable_sort(p.group.members.begin(), p.group.members.end(),
                     [](const GroupMember& a, const GroupMember& b) {
                       return a.param != b.param ? a.param < b.param : a.dim < b.dim;
                     });
    std::string key = to_string(p.group.kind);
    for (const GroupMember& m : p.group.members) {
      const GraphParam& gp = params_[static_cast<std::size_t>(m.param)];
      Index per_channel = 1;
      for (std::size_t d = 0; d < gp.shape.size(); ++d)
        if (static_cast<int>(d) != m.dim) per_channel *= gp.shape[d];
      Index of_unit0 = 0;
      for (Index u : m.unit_of_channel) of_unit0 += u == 0;
      key += ";" + std::to_string(gp.shape.size()) + "/" + std::to_string(m.dim) + "/" +
             std::to_string(static_cast<int>(gp.role)) + "/" + std::to_string(per_channel) + "/" +
             std::to_string(of_unit0);
    }
    p.group.isomorphism_key = std::move(key);
    groups_.push_back(std::move(p.group));
    unit_comps_.push_back(std::move(p.unit_comps));
  }
}

inline void DependencyGraph::build_depth_group() {
  const auto& ops = desc_.ops();
  const auto& values = desc_.values();
  op_scope_.assign(ops.size(), -1);
  for (std::size_t o = 0; o < ops.size(); ++o) {
    if (ops[o].scope.empty()) continue;
    auto it = std::find(scopes_.begin(), scopes_.end(), ops[o].scope);
    if (it == scopes_.end()) {
      scopes_.push_back(ops[o].scope);
      it = scopes_.end() - 1;
    }
    op_scope_[o] = static_cast<int>(it - scopes_.begin());
  }
  const std::set<ValueId> outputs(desc_.outputs().begin(), desc_.outputs().end());
  Group depth;
  depth.name = "depth";
  depth.kind = GroupKind::kDepth;
  for (std::size_t s = 0; s < scopes_.size(); ++s) {
    std::set<int> in_scope, covered;
    for (std::size_t o = 0; o < ops.size(); ++o)
      if (op_scope_[o] == static_cast<int>(s)) in_scope.insert(static_cast<int>(o));
    bool ok = false;
    for (int o : in_scope) {
      const OpInfo& add = ops[static_cast<std::size_t>(o)];
      if (add.kind != OpKind::kResidualAdd) continue;
      ok = true;
      covered.insert(o);
      std::vector<ValueId> stack{add.inputs[1]};
      std::set<ValueId> seen;
      while (!stack.empty() && ok) {
        const ValueId v = stack.back();
        stack.pop_back();
        if (v == add.inputs[0] || !seen.insert(v).second) continue;
        const int producer = values[static_cast<std::size_t>(v)].producer;
        if (ops[static_cast<std::size_t>(producer)].kind == OpKind::kInput ||
            !in_scope.count(producer)) {
          ok = false;
          break;
        }
        covered.insert(producer);
        for (ValueId x : ops[static_cast<std::size_t>(producer)].inputs) stack.push_back(x);
      }
      if (!ok) break;
    }
    if (!ok || covered != in_scope) continue;
    // Values made inside the scope may leave it only through its residual adds.
    for (int o : in_scope) {
      if (ops[static_cast<std::size_t>(o)].kind == OpKind::kResidualAdd) continue;
      for (ValueId y : ops[static_cast<std::size_t>(o)].outputs) {
        if (outputs.count(y)) ok = false;
        for (int c : consumers_[static_cast<std::size_t>(y)])
          if (!in_scope.count(c)) ok = false;
      }
    }
    if (!ok) continue;
    const Index unit = depth.units++;
    depth.unit_names.push_back(scopes_[s]);
    depth_unit_scope_.push_back(static_cast<int>(s));
    std::set<int> scope_params;
    for (int o : in_scope)
      for (int u : ops[static_cast<std::size_t>(o)].params)
        scope_params.insert(param_of_use_[static_cast<std::size_t>(u)]);
    for (int p : scope_params) depth.members.push_back({p, -1, false, {unit}});
  }
  if (depth.units > 0) {
    depth.isomorphism_key = "depth";
    groups_.push_back(std::move(depth));
    unit_comps_.emplace_back(static_cast<std::size_t>(groups_.back().units));
  }
}

inline int DependencyGraph::find_param(std::string_view name) const {
  for (std::size_t p = 0; p < params_.size(); ++p)
    if (params_[p].name == name) return static_cast<int>(p);
  return -1;
}

inline int DependencyGraph::find_group(std::string_view name) const {
  for (std::size_t g = 0; g < groups_.size(); ++g)
    if (groups_[g].name == name) return static_cast<int>(g);
  return -1;
}

inline const Group& DependencyGraph::group(std::string_view name) const {
  const int g = find_group(name);
  if (g < 0) VITC_THROW(ArgumentError("no pruning group named '" + std::string(name) + "'"));
  return groups_[static_cast<std::size_t>(g)];
}

inline std::int64_t DependencyGraph::op_macs(const OpInfo& op,
                                             const std::vector<Index>& size) const {
  const auto n = [&](ValueId v) {
    return static_cast<std::int64_t>(size[static_cast<std::size_t>(v)]);
  };
  switch (op.kind) {
    case OpKind::kLinear:
      return op.rows * n(op.inputs[0]) * n(op.outputs[0]);
    case OpKind::kPatchEmbed:
      return op.rows * n(op.inputs[0]) * op.kernel * n(op.outputs[0]);
    case OpKind::kAttention:
      return op.rows * op.rows * (n(op.inputs[0]) + n(op.inputs[2]));
    default:
      return 0;
  }
}

inline std::int64_t DependencyGraph::parameter_count() const {
  return Shrink(*this).parameter_count();
}
inline std::int64_t DependencyGraph::macs() const { return Shrink(*this).macs(); }

// ---- Shrink ----------------------------------------------------------------------------------

inline DependencyGraph::Shrink::Shrink(const DependencyGraph& graph) : g_(&graph) {
  comp_removed_.assign(graph.comp_nodes_.size(), 0);
  for (const Group& grp : graph.groups_) {
    unit_removed_.emplace_back(static_cast<std::size_t>(grp.units), 0);
    kept_units_.push_back(grp.units);
  }
  for (const ValueInfo& v : graph.desc_.values()) value_size_.push_back(v.size);
  for (const GraphParam& p : graph.params_) param_dim_size_.push_back(p.shape);
  scope_removed_.assign(graph.scopes_.size(), 0);
}

inline bool DependencyGraph::Shrink::remove(int group, Index unit) {
  if (group < 0 || group >= static_cast<int>(g_->groups_.size()))
    VITC_THROW(ArgumentError("Shrink::remove: group " + std::to_string(group) + " out of range"));
  const Group& grp = g_->groups_[static_cast<std::size_t>(group)];
  if (unit < 0 || unit >= grp.units)
    VITC_THROW(ArgumentError("Shrink::remove: unit " + std::to_string(unit) + " of group '" +
                             grp.name + "' out of range"));
  char& flag = unit_removed_[static_cast<std::size_t>(group)][static_cast<std::size_t>(unit)];
  if (flag) return false;
  flag = 1;
  --kept_units_[static_cast<std::size_t>(group)];
  if (grp.kind == GroupKind::kDepth) {
    scope_removed_[static_cast<std::size_t>(
        g_->depth_unit_scope_[static_cast<std::size_t>(unit)])] = 1;
    return true;
  }
  for (int c : g_->unit_comps_[static_cast<std::size_t>(group)][static_cast<std::size_t>(unit)]) {
    if (comp_removed_[static_cast<std::size_t>(c)]) continue;
    comp_removed_[static_cast<std::size_t>(c)] = 1;
    for (int n : g_->comp_nodes_[static_cast<std::size_t>(c)]) {
      const Node& node = g_->nodes_[static_cast<std::size_t>(n)];
      if (node.value >= 0)
        --value_size_[static_cast<std::size_t>(node.value)];
      else
        --param_dim_size_[static_cast<std::size_t>(node.param)][static_cast<std::size_t>(node.dim)];
    }
  }
  return true;
}

inline bool DependencyGraph::Shrink::removed(int group, Index unit) const {
  return unit_removed_.at(static_cast<std::size_t>(group)).at(static_cast<std::size_t>(unit)) != 0;
}

inline Index DependencyGraph::Shrink::kept_units(int group) const {
  return kept_units_.at(static_cast<std::size_t>(group));
}

inline bool DependencyGraph::Shrink::scope_removed(const std::string& scope) const {
  for (std::size_t s = 0; s < g_->scopes_.size(); ++s)
    if (g_->scopes_[s] == scope) return scope_removed_[s] != 0;
  return false;
}

inline bool DependencyGraph::Shrink::param_removed(int param) const {
  const GraphParam& p = g_->params_.at(static_cast<std::size_t>(param));
  for (int op : p.ops) {
    const int s = g_->op_scope_[static_cast<std::size_t>(op)];
    if (s < 0 || !scope_removed_[static_cast<std::size_t>(s)]) return false;
  }
  return true;
}

inline Index DependencyGraph::Shrink::param_extent(int param, int dim) const {
  return param_dim_size_.at(static_cast<std::size_t>(param)).at(static_cast<std::size_t>(dim));
}

inline std::int64_t DependencyGraph::Shrink::parameter_count() const {
  std::int64_t total = 0;
  for (std::size_t p = 0; p < g_->params_.size(); ++p) {
    if (param_removed(static_cast<int>(p))) continue;
    std::int64_t n = 1;
    for (Index e : param_dim_size_[p]) n *= e;
    total += n;
  }
  return total;
}

inline std::int64_t DependencyGraph::Shrink::macs() const {
  std::int64_t total = 0;
  const auto& ops = g_->desc_.ops();
  for (std::size_t o = 0; o < ops.size(); ++o) {
    const int s = g_->op_scope_.empty() ? -1 : g_->op_scope_[o];
    if (s >= 0 && scope_removed_[static_cast<std::size_t>(s)]) continue;
    total += g_->op_macs(ops[o], value_size_);
  }
  return total;
}

inline std::vector<Index> DependencyGraph::Shrink::kept_indices(int param, int dim) const {
  const GraphParam& p = g_->params_.at(static_cast<std::size_t>(param));
  const Index extent = p.shape.at(static_cast<std::size_t>(dim));
  const int base =
      g_->param_dim_base_[static_cast<std::size_t>(param)][static_cast<std::size_t>(dim)];
  std::vector<Index> kept;
  kept.reserve(static_cast<std::size_t>(extent));
  for (Index i = 0; i < extent; ++i) {
    if (base >= 0) {
      const int c = g_->comp_of_node_[static_cast<std::size_t>(base + i)];
      if (c >= 0 && comp_removed_[static_cast<std::size_t>(c)]) continue;
    }
    kept.push_back(i);
  }
  return kept;
}

inline Index DependencyGraph::Shrink::kept_heads(int attention_op) const {
  const OpInfo& op = g_->desc_.ops().at(static_cast<std::size_t>(attention_op));
  if (op.kind != OpKind::kAttention)
    VITC_THROW(ArgumentError("kept_heads: '" + op.name + "' is not an attention operator"));
  const ValueId q = op.inputs[0];
  const Index heads = g_->value_heads(q);
  const Index d = g_->desc_.values()[static_cast<std::size_t>(q)].size / heads;
  Index kept = 0;
  for (Index h = 0; h < heads; ++h) {
    bool any = false;
    for (Index j = 0; j < d && !any; ++j) {
      const int c = g_->comp_of_node_[static_cast<std::size_t>(
          g_->value_base_[static_cast<std::size_t>(q)] + h * d + j)];
      any = c < 0 || !comp_removed_[static_cast<std::size_t>(c)];
    }
    kept += any;
  }
  return kept;
}

}  // namespace vitc::prune
