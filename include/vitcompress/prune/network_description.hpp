// SPDX-License-Identifier: Apache-2.0
#pragma once
// An operator-level description of a network, the input of the dependency graph.
//
// Structured pruning must remove the same channel from every tensor that touches it: a hidden
// neuron of an MLP is a row of fc1, an entry of fc1's bias and a column of fc2; a channel of a
// ViT's residual stream is a row of the patch embedding, an entry of the class token, a column of
// the position embedding, of every LayerNorm, every qkv and fc1 input column, every proj and fc2
// output row, the head's input column. Rather than list such sets per tensor name, a network is
// described once as a list of operators on *values* (activations, each with a number of channels)
// and the parameters they use; DependencyGraph (dependency_graph.hpp) finds the coupled channels by
// propagating through it.
//
// Operators, and how their channels relate (c = channel index):
//
//   input(C)                     a network input; its channels are fixed (never pruned)
//   linear(x, out)               y = x Wᵀ + b; W [out, |x|] (dim 1 reads x), b [out]; no coupling
//                                between x and y
//   patch_embed(img, D, P)       Conv2d with kernel = stride = P: W [D, |img|, P, P], b [D]
//   class_token(x, param)        prepends a learned token [1, 1, |x|]: y[c] ≡ x[c] ≡ param[.., c]
//   position_embed(x, param, T)  adds [1, T, |x|]: y[c] ≡ x[c] ≡ param[.., c]
//   layer_norm(x, w, b)          y[c] ≡ x[c] ≡ w[c] ≡ b[c]
//   elementwise(x)               GELU and other pointwise maps: y[c] ≡ x[c]
//   residual_add(stream, branch) y = stream + branch: y[c] ≡ stream[c] ≡ branch[c]; marks `branch`
//                                as a removable residual branch (depth pruning)
//   split(x, sizes)              y_k[c] ≡ x[offset_k + c]
//   concat(xs)                   y[offset_k + c] ≡ x_k[c]
//   head_split(x, H)             the same channels seen as H heads of |x|/H: y[c] ≡ x[c], channel c
//                                is (head c / (|x|/H), index c % (|x|/H))
//   attention(q, k, v, T)        softmax(q kᵀ / √d) v per head, over T tokens: q[c] ≡ k[c] (a query
//                                channel and its key channel are removed together), out[c] ≡ v[c],
//                                and head h of q, k, v and out is one head
//   head_merge(x)                the heads concatenated again: y[c] ≡ x[c]
//   output(x)                    marks x as a network output; its channels are fixed
//
// Scopes (begin_scope / end_scope) name the operators of a block; a scope all of whose operators
// lie on its own residual branches can be removed whole (depth pruning).
//
// Building only records: sizes and wiring are checked when a DependencyGraph is made from the
// description, which throws ShapeError (sizes) or ArgumentError (wiring) naming the operator. The
// builder throws ArgumentError at once for an unknown value id or an unbalanced scope. Parameter
// shapes follow from the operators (a linear layer's weight is [out, |x|]); a parameter name used
// by two operators is one shared tensor, and both uses must imply the same shape.
//
// `rows` and `tokens` count token rows per image, for the multiply-accumulate count (a classifier
// that reads only the class token has rows = 1).

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "vitcompress/core/error.hpp"
#include "vitcompress/core/tensor.hpp"

namespace vitc::prune {

using ValueId = int;

enum class OpKind {
  kInput,
  kLinear,
  kPatchEmbed,
  kClassToken,
  kPositionEmbed,
  kLayerNorm,
  kElementwise,
  kResidualAdd,
  kSplit,
  kConcat,
  kHeadSplit,
  kHeadMerge,
  kAttention,
};

[[nodiscard]] inline const char* to_string(OpKind k) noexcept {
  switch (k) {
    case OpKind::kInput:
      return "input";
    case OpKind::kLinear:
      return "linear";
    case OpKind::kPatchEmbed:
      return "patch_embed";
    case OpKind::kClassToken:
      return "class_token";
    case OpKind::kPositionEmbed:
      return "position_embed";
    case OpKind::kLayerNorm:
      return "layer_norm";
    case OpKind::kElementwise:
      return "elementwise";
    case OpKind::kResidualAdd:
      return "residual_add";
    case OpKind::kSplit:
      return "split";
    case OpKind::kConcat:
      return "concat";
    case OpKind::kHeadSplit:
      return "head_split";
    case OpKind::kHeadMerge:
      return "head_merge";
    case OpKind::kAttention:
      return "attention";
  }
  return "unknown";
}

enum class ParamRole {
  kWeight,  // weights, LayerNorm gains, embeddings
  kBias,    // biases and LayerNorm shifts (scored only when asked for)
};

// One dimension of a parameter that indexes the channels of a value, one to one.
struct ParamBinding {
  int param = -1;
  int dim = 0;
  ValueId value = -1;
  bool input_side = false;  // the dimension reads the value (a linear layer's input columns)
};

struct ParamInfo {
  std::string name;
  std::vector<Index> shape;
  ParamRole role = ParamRole::kWeight;
};

struct ValueInfo {
  std::string name;
  Index size = 0;     // channels
  int producer = -1;  // the operator that makes it
};

struct OpInfo {
  OpKind kind = OpKind::kInput;
  std::string name;
  std::string scope;  // empty outside any scope
  std::vector<ValueId> inputs;
  std::vector<ValueId> outputs;
  std::vector<int> params;  // indices into params()
  std::vector<ParamBinding> bindings;
  Index rows = 0;            // linear: rows per image; patch_embed: patches; attention: tokens
  Index heads = 0;           // head_split
  Index kernel = 1;          // patch_embed: P*P
  std::vector<Index> sizes;  // split
};

class NetworkDescription {
 public:
  [[nodiscard]] const std::vector<ValueInfo>& values() const noexcept { return values_; }
  [[nodiscard]] const std::vector<OpInfo>& ops() const noexcept { return ops_; }
  [[nodiscard]] const std::vector<ParamInfo>& params() const noexcept { return params_; }
  [[nodiscard]] const std::vector<ValueId>& outputs() const noexcept { return outputs_; }

  ValueId input(const std::string& name, Index channels) {
    const int op = add_op(OpKind::kInput, name, {});
    return add_value(name, channels, op);
  }

  void output(ValueId x) {
    check(x, "output");
    outputs_.push_back(x);
  }

  ValueId linear(const std::string& name, ValueId x, Index out, const std::string& weight,
                 const std::string& bias, Index rows) {
    check(x, name);
    const int op = add_op(OpKind::kLinear, name, {x});
    ops_[op].rows = rows;
    const ValueId y = add_value(name, out, op);
    const int w = add_param(op, weight, {out, values_[x].size}, ParamRole::kWeight);
    bind(op, w, 0, y, false);
    bind(op, w, 1, x, true);
    if (!bias.empty()) bind(op, add_param(op, bias, {out}, ParamRole::kBias), 0, y, false);
    return y;
  }

  ValueId patch_embed(const std::string& name, ValueId image, Index out, Index patch,
                      const std::string& weight, const std::string& bias, Index patches) {
    check(image, name);
    const int op = add_op(OpKind::kPatchEmbed, name, {image});
    ops_[op].rows = patches;
    ops_[op].kernel = patch * patch;
    const ValueId y = add_value(name, out, op);
    const int w =
        add_param(op, weight, {out, values_[image].size, patch, patch}, ParamRole::kWeight);
    bind(op, w, 0, y, false);
    bind(op, w, 1, image, true);
    if (!bias.empty()) bind(op, add_param(op, bias, {out}, ParamRole::kBias), 0, y, false);
    return y;
  }

  ValueId class_token(const std::string& name, ValueId x, const std::string& param) {
    check(x, name);
    const int op = add_op(OpKind::kClassToken, name, {x});
    const ValueId y = add_value(name, values_[x].size, op);
    bind(op, add_param(op, param, {1, 1, values_[x].size}, ParamRole::kWeight), 2, y, false);
    return y;
  }

  ValueId position_embed(const std::string& name, ValueId x, const std::string& param,
                         Index tokens) {
    check(x, name);
    const int op = add_op(OpKind::kPositionEmbed, name, {x});
    const ValueId y = add_value(name, values_[x].size, op);
    bind(op, add_param(op, param, {1, tokens, values_[x].size}, ParamRole::kWeight), 2, y, false);
    return y;
  }

  ValueId layer_norm(const std::string& name, ValueId x, const std::string& weight,
                     const std::string& bias) {
    check(x, name);
    const int op = add_op(OpKind::kLayerNorm, name, {x});
    const ValueId y = add_value(name, values_[x].size, op);
    if (!weight.empty())
      bind(op, add_param(op, weight, {values_[x].size}, ParamRole::kWeight), 0, y, false);
    if (!bias.empty())
      bind(op, add_param(op, bias, {values_[x].size}, ParamRole::kBias), 0, y, false);
    return y;
  }

  ValueId elementwise(const std::string& name, ValueId x) {
    check(x, name);
    const int op = add_op(OpKind::kElementwise, name, {x});
    return add_value(name, values_[x].size, op);
  }

  ValueId residual_add(const std::string& name, ValueId stream, ValueId branch) {
    check(stream, name);
    check(branch, name);
    const int op = add_op(OpKind::kResidualAdd, name, {stream, branch});
    return add_value(name, values_[stream].size, op);
  }

  std::vector<ValueId> split(const std::string& name, ValueId x, const std::vector<Index>& sizes) {
    check(x, name);
    const int op = add_op(OpKind::kSplit, name, {x});
    ops_[op].sizes = sizes;
    std::vector<ValueId> ys;
    for (std::size_t k = 0; k < sizes.size(); ++k)
      ys.push_back(add_value(name + "." + std::to_string(k), sizes[k], op));
    return ys;
  }

  ValueId concat(const std::string& name, const std::vector<ValueId>& xs) {
    Index total = 0;
    for (ValueId x : xs) {
      check(x, name);
      total += values_[x].size;
    }
    const int op = add_op(OpKind::kConcat, name, xs);
    return add_value(name, total, op);
  }

  ValueId head_split(const std::string& name, ValueId x, Index heads) {
    check(x, name);
    const int op = add_op(OpKind::kHeadSplit, name, {x});
    ops_[op].heads = heads;
    return add_value(name, values_[x].size, op);
  }

  ValueId head_merge(const std::string& name, ValueId x) {
    check(x, name);
    const int op = add_op(OpKind::kHeadMerge, name, {x});
    return add_value(name, values_[x].size, op);
  }

  ValueId attention(const std::string& name, ValueId q, ValueId k, ValueId v, Index tokens) {
    check(q, name);
    check(k, name);
    check(v, name);
    const int op = add_op(OpKind::kAttention, name, {q, k, v});
    ops_[op].rows = tokens;
    return add_value(name, values_[v].size, op);
  }

  // Renames a value (group names come from value names; an operator's output is named after it).
  void name_value(ValueId x, const std::string& name) {
    check(x, "name_value");
    values_[static_cast<std::size_t>(x)].name = name;
  }

  void begin_scope(const std::string& name) {
    if (!scope_.empty())
      VITC_THROW(ArgumentError("begin_scope(\"" + name + "\"): scope \"" + scope_ +
                               "\" is still open (scopes do not nest)"));
    if (name.empty()) VITC_THROW(ArgumentError("begin_scope: empty scope name"));
    scope_ = name;
  }
  void end_scope() {
    if (scope_.empty()) VITC_THROW(ArgumentError("end_scope: no scope is open"));
    scope_.clear();
  }

 private:
  void check(ValueId x, const std::string& op) const {
    if (x < 0 || x >= static_cast<ValueId>(values_.size()))
      VITC_THROW(ArgumentError(op + ": unknown value id " + std::to_string(x)));
  }
  int add_op(OpKind kind, const std::string& name, std::vector<ValueId> inputs) {
    OpInfo o;
    o.kind = kind;
    o.name = name;
    o.scope = scope_;
    o.inputs = std::move(inputs);
    ops_.push_back(std::move(o));
    return static_cast<int>(ops_.size()) - 1;
  }
  ValueId add_value(const std::string& name, Index size, int op) {
    values_.push_back({name, size, op});
    const auto id = static_cast<ValueId>(values_.size()) - 1;
    ops_[static_cast<std::size_t>(op)].outputs.push_back(id);
    return id;
  }
  int add_param(int op, const std::string& name, std::vector<Index> shape, ParamRole role) {
    if (name.empty())
      VITC_THROW(
          ArgumentError(ops_[static_cast<std::size_t>(op)].name + ": a parameter needs a name"));
    params_.push_back({name, std::move(shape), role});
    const int p = static_cast<int>(params_.size()) - 1;
    ops_[static_cast<std::size_t>(op)].params.push_back(p);
    return p;
  }
  void bind(int op, int param, int dim, ValueId value, bool input_side) {
    ops_[static_cast<std::size_t>(op)].bindings.push_back({param, dim, value, input_side});
  }

  std::vector<ValueInfo> values_;
  std::vector<OpInfo> ops_;
  std::vector<ParamInfo> params_;  // one entry per use; DependencyGraph merges equal names
  std::vector<ValueId> outputs_;
  std::string scope_;
};

}  // namespace vitc::prune
