// SPDX-License-Identifier: Apache-2.0
#pragma once
// Importance scores for every group of a dependency graph, from named tensors.
//
// Connects the graph (which tensor dimensions make up each unit) to the importance estimators of
// importance/ (how a unit's elements become a score). The caller passes the network's parameters
// as named flat tensors (ParamTensor: name, shape, contiguous row-major values) and, for
// estimators that need one, the statistic of each parameter under the same name (the mean gradient
// for Taylor, the Hessian-diagonal estimate for HessianDiag); tensors come from anywhere, a
// ViTWeights (param_tensors() in vit_pruner.hpp) or another framework.
//
// Biases and LayerNorm shifts (ParamRole::kBias) are scored only with include_bias, as in
// Torch-Pruning (bias=False by default). A kDepth unit is scored over every element of every
// tensor of its block.
//
// The result holds one vector of unit scores per group of the graph, in the graph's order; a group
// not asked for (see `which`) gets an empty vector. Throws ArgumentError naming a missing tensor,
// ShapeError naming a tensor whose shape differs from the graph's, ArgumentError on a non-finite
// value (naming the tensor).

#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "vitcompress/core/error.hpp"
#include "vitcompress/core/tensor.hpp"
#include "vitcompress/importance/group_importance.hpp"
#include "vitcompress/importance/hessian_diag.hpp"
#include "vitcompress/importance/magnitude.hpp"
#include "vitcompress/importance/taylor.hpp"
#include "vitcompress/prune/dependency_graph.hpp"

namespace vitc::prune {

template <class T>
struct ParamTensor {
  std::string name;
  std::vector<Index> shape;
  std::span<const T> values;  // contiguous, row-major
};

struct ScoreOptions {
  bool include_bias = false;
  // Groups to score (by index); empty = all.
  std::vector<char> which;
};

namespace detail {

template <class T>
std::map<std::string_view, const ParamTensor<T>*> index_tensors(
    std::span<const ParamTensor<T>> ts) {
  std::map<std::string_view, const ParamTensor<T>*> m;
  for (const ParamTensor<T>& t : ts) m.emplace(t.name, &t);
  return m;
}

template <class T>
TensorView<const T, 3> member_view(const ParamTensor<T>& t, int dim) {
  if (dim < 0)
    return TensorView<const T, 3>(t.values.data(), {1, 1, static_cast<Index>(t.values.size())});
  Index outer = 1, inner = 1;
  for (int d = 0; d < dim; ++d) outer *= t.shape[static_cast<std::size_t>(d)];
  for (std::size_t d = static_cast<std::size_t>(dim) + 1; d < t.shape.size(); ++d)
    inner *= t.shape[d];
  return TensorView<const T, 3>(t.values.data(),
                                {outer, t.shape[static_cast<std::size_t>(dim)], inner});
}

template <class T>
const ParamTensor<T>& lookup(const std::map<std::string_view, const ParamTensor<T>*>& m,
                             const GraphParam& p, const char* what) {
  auto it = m.find(p.name);
  if (it == m.end())
    VITC_THROW(ArgumentError(std::string(what) + ": no tensor named '" + p.name + "'"));
  const ParamTensor<T>& t = *it->second;
  Index n = 1;
  for (Index e : t.shape) n *= e;
  if (t.shape != p.shape || n != static_cast<Index>(t.values.size()))
    VITC_THROW(ShapeError(std::string(what) + ": '" + p.name + "' has shape " +
                          prune::detail::shape_text(t.shape) + " (" +
                          std::to_string(t.values.size()) + " values), the graph expects " +
                          prune::detail::shape_text(p.shape)));
  return t;
}

}  // namespace detail

template <importance::ImportanceEstimator E, importance::GroupReduction Reduce,
          importance::GroupNormalizer Normalize, class T>
std::vector<std::vector<double>> score_groups(const DependencyGraph& graph,
                                              std::span<const ParamTensor<T>> weights,
                                              std::span<const ParamTensor<T>> statistics,
                                              const ScoreOptions& options = {}) {
  const auto w = detail::index_tensors(weights);
  const auto s = detail::index_tensors(statistics);
  std::vector<std::vector<double>> scores(graph.groups().size());
  for (std::size_t g = 0; g < graph.groups().size(); ++g) {
    if (!options.which.empty() && (g >= options.which.size() || !options.which[g])) continue;
    const Group& grp = graph.groups()[g];
    std::vector<importance::GroupMember<T>> members;
    for (const GroupMember& m : grp.members) {
      const GraphParam& p = graph.params()[static_cast<std::size_t>(m.param)];
      if (p.role == ParamRole::kBias && !options.include_bias && grp.kind != GroupKind::kDepth)
        continue;
      const ParamTensor<T>& wt = detail::lookup(w, p, "weights");
      importance::GroupMember<T> gm;
      gm.name = p.name;
      gm.weight = detail::member_view(wt, m.dim);
      if constexpr (E::kNeedsStatistic)
        gm.statistic = detail::member_view(detail::lookup(s, p, "statistics"), m.dim);
      gm.unit_of_channel = m.unit_of_channel;
      members.push_back(gm);
    }
    scores[g] = importance::group_importance<E, Reduce, Normalize, T>(
        std::span<const importance::GroupMember<T>>(members), grp.units);
  }
  return scores;
}

// ---- run-time choice, for tools ---------------------------------------------------------------

enum class Estimator { kL1, kL2, kTaylor, kHessianFisher, kHessianHutchinson };
enum class Reduction { kSum, kMean, kMax, kFirst };
enum class Normalization { kNone, kMean, kMax, kSum, kLamp };

[[nodiscard]] inline bool needs_statistic(Estimator e) noexcept {
  return e == Estimator::kTaylor || e == Estimator::kHessianFisher ||
         e == Estimator::kHessianHutchinson;
}

struct ScoreSpec {
  Estimator estimator = Estimator::kL2;
  Reduction reduction = Reduction::kMean;
  Normalization normalization = Normalization::kMean;
};

template <class T>
std::vector<std::vector<double>> score_groups(const DependencyGraph& graph,
                                              std::span<const ParamTensor<T>> weights,
                                              std::span<const ParamTensor<T>> statistics,
                                              const ScoreSpec& spec,
                                              const ScoreOptions& options = {}) {
  namespace imp = importance;
  const auto with_norm = [&]<class E, class R>() {
    switch (spec.normalization) {
      case Normalization::kNone:
        return score_groups<E, R, imp::normalize::None, T>(graph, weights, statistics, options);
      case Normalization::kMean:
        return score_groups<E, R, imp::normalize::Mean, T>(graph, weights, statistics, options);
      case Normalization::kMax:
        return score_groups<E, R, imp::normalize::Max, T>(graph, weights, statistics, options);
      case Normalization::kSum:
        return score_groups<E, R, imp::normalize::Sum, T>(graph, weights, statistics, options);
      case Normalization::kLamp:
        return score_groups<E, R, imp::normalize::Lamp, T>(graph, weights, statistics, options);
    }
    VITC_THROW(ArgumentError("score_groups: unknown normalization"));
  };
  const auto with_reduce = [&]<class E>() {
    switch (spec.reduction) {
      case Reduction::kSum:
        return with_norm.template operator()<E, imp::reduce::Sum>();
      case Reduction::kMean:
        return with_norm.template operator()<E, imp::reduce::Mean>();
      case Reduction::kMax:
        return with_norm.template operator()<E, imp::reduce::Max>();
      case Reduction::kFirst:
        return with_norm.template operator()<E, imp::reduce::First>();
    }
    VITC_THROW(ArgumentError("score_groups: unknown reduction"));
  };
  switch (spec.estimator) {
    case Estimator::kL1:
      return with_reduce.template operator()<imp::Magnitude<1>>();
    case Estimator::kL2:
      return with_reduce.template operator()<imp::Magnitude<2>>();
    case Estimator::kTaylor:
      return with_reduce.template operator()<imp::Taylor>();
    case Estimator::kHessianFisher:
      return with_reduce.template operator()<imp::HessianDiag<imp::EmpiricalFisher>>();
    case Estimator::kHessianHutchinson:
      return with_reduce.template operator()<imp::HessianDiag<imp::Hutchinson>>();
  }
  VITC_THROW(ArgumentError("score_groups: unknown estimator"));
}

}  // namespace vitc::prune
