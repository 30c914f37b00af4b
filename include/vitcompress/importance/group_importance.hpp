// SPDX-License-Identifier: Apache-2.0
#pragma once
// One importance score per prunable unit of a group of coupled tensors.
//
// Structured pruning removes *units*: an attention head, an MLP neuron, one channel of the
// embedding. A unit is spread over several tensors (a head owns rows of qkv and columns of proj),
// and every tensor that holds part of it is a *member* of the unit's group. Scoring a group is
// three steps, each a policy:
//
//   1. Estimator (the ImportanceEstimator concept): every element w of a member, with its
//      statistic s (a mean gradient, a Hessian-diagonal estimate, or nothing), contributes
//      E::contribution(w, s); a member's local score for unit u is the sum over the elements of
//      u's channels in that member. Magnitude<P> (magnitude.hpp), Taylor (taylor.hpp),
//      HessianDiag<EmpiricalFisher | Hutchinson> (hessian_diag.hpp).
//   2. Reduce: the members' local scores combine into one per unit: reduce::Sum, reduce::Mean (over
//      the members that hold part of the unit), reduce::Max, reduce::First (the first member).
//   3. Normalize: the unit scores of the group are rescaled so that groups can be ranked against
//      each other: normalize::None, Mean (÷ mean), Max (÷ max), Sum (÷ sum), Lamp (score ÷ the sum
//      of the scores not smaller than it, LAMP; ties broken by unit index).
//
// A *signed* estimator (Taylor: w·∂L/∂w) keeps the sign through Sum and Mean and takes the absolute
// value of the result, so Taylor with reduce::Sum is |Σ_group w·∂L/∂w|, the first-order change of
// the loss when the whole unit is removed; under Max and First the absolute value is taken per
// member. Estimators return non-negative scores, so normalizers never divide by a negative number;
// a normalizer whose denominator is zero leaves the scores unchanged.
//
// Everything works on TensorViews, without the library's model: a framework that has its own
// weights and gradients passes views of them. A member is a view [outer, channels, inner] of one
// tensor, where `channels` is the pruned dimension (channel_view() makes one from a tensor of any
// rank and the index of that dimension), plus the unit each channel belongs to.
//
// Cost: one pass over the elements of every member; O(units) memory per member. Scores are computed
// in double.

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <limits>
#include <numeric>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "vitcompress/core/error.hpp"
#include "vitcompress/core/tensor.hpp"

namespace vitc::importance {

// What an importance estimator provides (see the file comment). `statistic` is the per-element
// statistic the estimator needs (ignored when kNeedsStatistic is false).
template <class E>
concept ImportanceEstimator = requires(double w, double s) {
  { E::kNeedsStatistic } -> std::convertible_to<bool>;
  { E::kSigned } -> std::convertible_to<bool>;
  { E::contribution(w, s) } -> std::convertible_to<double>;
  { E::name() } -> std::convertible_to<std::string_view>;
};

// Marks a channel of a member that belongs to no unit of the group.
inline constexpr Index kNoUnit = -1;

// One tensor of a group.
template <class T>
struct GroupMember {
  std::string_view name;                   // for error messages
  TensorView<const T, 3> weight;           // [outer, channels, inner]
  TensorView<const T, 3> statistic;        // same shape, or empty when the estimator needs none
  std::span<const Index> unit_of_channel;  // `channels` entries: a unit index or kNoUnit
};

// A view [outer, channels, inner] of `x` whose middle dimension is dimension `dim` of x: the
// dimensions before `dim` merge into `outer`, those after into `inner`. Needs strides that allow
// the merge (always true for contiguous tensors and for any rank-2 view); throws ShapeError
// otherwise, and ArgumentError when dim >= Rank.
template <class T, std::size_t Rank>
TensorView<const T, 3> channel_view(TensorView<const T, Rank> x, std::size_t dim) {
  if (dim >= Rank)
    VITC_THROW(ArgumentError("channel_view: dimension " + std::to_string(dim) + " of a rank-" +
                             std::to_string(Rank) + " tensor"));
  // Merges dimensions [begin, end) into one extent and stride, if the strides allow.
  const auto merge = [&](std::size_t begin, std::size_t end, Index& extent, Index& stride) {
    extent = 1;
    stride = 0;
    for (std::size_t d = begin; d < end; ++d) {
      if (x.extent(d) == 1) continue;
      if (extent != 1 && stride != x.stride(d) * x.extent(d))
        VITC_THROW(ShapeError("channel_view: dimensions " + std::to_string(begin) + ".." +
                              std::to_string(end - 1) + " of shape " +
                              vitc::detail::shape_string(x.shape()) +
                              " cannot be merged under their strides"));
      extent *= x.extent(d);
      stride = x.stride(d);
    }
  };
  Index outer = 1, outer_stride = 0, inner = 1, inner_stride = 0;
  merge(0, dim, outer, outer_stride);
  merge(dim + 1, Rank, inner, inner_stride);
  if (x.empty()) return TensorView<const T, 3>(x.data(), {outer, x.extent(dim), inner});
  return TensorView<const T, 3>(x.data(), {outer, x.extent(dim), inner},
                                {outer_stride, x.stride(dim), inner_stride});
}

// ---- group reductions ----------------------------------------------------------------------
namespace reduce {
struct Sum {
  static constexpr std::string_view kName = "sum";
};
struct Mean {
  static constexpr std::string_view kName = "mean";
};
struct Max {
  static constexpr std::string_view kName = "max";
};
struct First {
  static constexpr std::string_view kName = "first";
};
}  // namespace reduce

template <class R>
concept GroupReduction = std::same_as<R, reduce::Sum> || std::same_as<R, reduce::Mean> ||
    std::same_as<R, reduce::Max> || std::same_as<R, reduce::First>;

// ---- normalizers ---------------------------------------------------------------------------
namespace normalize {
struct None {
  static constexpr std::string_view kName = "none";
  static void apply(std::span<double>) noexcept {}
};

namespace detail {
inline void divide(std::span<double> s, double denominator) noexcept {
  if (!(denominator > 0) || !std::isfinite(denominator)) return;
  for (double& v : s) v /= denominator;
}
}  // namespace detail

struct Mean {
  static constexpr std::string_view kName = "mean";
  static void apply(std::span<double> s) noexcept {
    if (s.empty()) return;
    detail::divide(s, std::accumulate(s.begin(), s.end(), 0.0) / static_cast<double>(s.size()));
  }
};
struct Max {
  static constexpr std::string_view kName = "max";
  static void apply(std::span<double> s) noexcept {
    if (s.empty()) return;
    detail::divide(s, *std::max_element(s.begin(), s.end()));
  }
};
struct Sum {
  static constexpr std::string_view kName = "sum";
  static void apply(std::span<double> s) noexcept {
    detail::divide(s, std::accumulate(s.begin(), s.end(), 0.0));
  }
};
// LAMP (Lee et al. 2021): with the scores sorted ascending (ties by index), s_(i) becomes
// s_(i) / Σ_{j >= i} s_(j). A zero denominator (all remaining scores zero) gives zero.
struct Lamp {
  static constexpr std::string_view kName = "lamp";
  static void apply(std::span<double> s) {
    std::vector<std::size_t> order(s.size());
    std::iota(order.begin(), order.end(), std::size_t{0});
    std::stable_sort(order.begin(), order.end(),
                     [&](std::size_t a, std::size_t b) { return s[a] < s[b]; });
    std::vector<double> out(s.size());
    double tail = 0;
    for (std::size_t k = s.size(); k-- > 0;) {
      tail += s[order[k]];
      out[order[k]] = tail > 0 ? s[order[k]] / tail : 0.0;
    }
    std::copy(out.begin(), out.end(), s.begin());
  }
};
}  // namespace normalize

template <class N>
concept GroupNormalizer = requires(std::span<double> s) {
  { N::kName } -> std::convertible_to<std::string_view>;
  N::apply(s);
};

// ---- scoring -------------------------------------------------------------------------------

// Local scores of one member: out[u] += Σ contribution over the elements of u's channels;
// present[u] is set for every unit the member holds a channel of.
template <ImportanceEstimator E, class T>
void member_local_scores(const GroupMember<T>& m, Index units, std::span<double> out,
                         std::span<unsigned char> present) {
  const std::string name(m.name.empty() ? std::string_view("member") : m.name);
  const TensorView<const T, 3>& w = m.weight;
  const Index outer = w.extent(0), channels = w.extent(1), inner = w.extent(2);
  if (static_cast<Index>(m.unit_of_channel.size()) != channels)
    VITC_THROW(ShapeError(name + ": unit_of_channel has " +
                          std::to_string(m.unit_of_channel.size()) + " entries for " +
                          std::to_string(channels) + " channels"));
  if (E::kNeedsStatistic && m.statistic.shape() != w.shape())
    VITC_THROW(ShapeError(name + ": the statistic " + std::string(E::name()) + " needs has shape " +
                          vitc::detail::shape_string(m.statistic.shape()) + ", the weight " +
                          vitc::detail::shape_string(w.shape())));
  for (Index c = 0; c < channels; ++c) {
    const Index u = m.unit_of_channel[static_cast<std::size_t>(c)];
    if (u == kNoUnit) continue;
    if (u < 0 || u >= units)
      VITC_THROW(ArgumentError(name + ": channel " + std::to_string(c) + " maps to unit " +
                               std::to_string(u) + ", outside [0, " + std::to_string(units) + ")"));
    double acc = 0;
    for (Index o = 0; o < outer; ++o)
      for (Index i = 0; i < inner; ++i) {
        const double wv = static_cast<double>(w(o, c, i));
        const double sv = E::kNeedsStatistic ? static_cast<double>(m.statistic(o, c, i)) : 0.0;
        if (!std::isfinite(wv) || !std::isfinite(sv))
          VITC_THROW(ArgumentError(name + ": channel " + std::to_string(c) +
                                   " holds a NaN or an infinity"));
        acc += E::contribution(wv, sv);
      }
    out[static_cast<std::size_t>(u)] += acc;
    present[static_cast<std::size_t>(u)] = 1;
  }
}

// Scores of the `units` units of a group (see the file comment). Throws ShapeError when a
// member's views disagree, ArgumentError on a bad unit index, a non-finite value, or a unit that no
// member holds.
template <ImportanceEstimator E, GroupReduction Reduce = reduce::Mean,
          GroupNormalizer Normalize = normalize::Mean, class T>
std::vector<double> group_importance(std::span<const GroupMember<T>> members, Index units) {
  if (units < 0) VITC_THROW(ArgumentError("group_importance: negative number of units"));
  if (members.empty()) VITC_THROW(ArgumentError("group_importance: a group needs members"));
  const auto n = static_cast<std::size_t>(units);
  std::vector<double> result(
      n, std::is_same_v<Reduce, reduce::Max> ? -std::numeric_limits<double>::infinity() : 0.0);
  std::vector<Index> holders(n, 0);
  std::vector<double> local(n);
  std::vector<unsigned char> present(n);
  for (std::size_t k = 0; k < members.size(); ++k) {
    std::fill(local.begin(), local.end(), 0.0);
    std::fill(present.begin(), present.end(), 0);
    member_local_scores<E>(members[k], units, local, present);
    for (std::size_t u = 0; u < n; ++u) {
      if (!present[u]) continue;
      double v = local[u];
      if constexpr (std::is_same_v<Reduce, reduce::Sum> || std::is_same_v<Reduce, reduce::Mean>) {
        result[u] += v;  // signed estimators keep the sign until the end
      } else {
        if constexpr (E::kSigned) v = std::abs(v);
        if constexpr (std::is_same_v<Reduce, reduce::Max>)
          result[u] = std::max(result[u], v);
        else if (holders[u] == 0)  // First
          result[u] = v;
      }
      ++holders[u];
    }
  }
  for (std::size_t u = 0; u < n; ++u) {
    if (holders[u] == 0)
      VITC_THROW(
          ArgumentError("group_importance: unit " + std::to_string(u) + " belongs to no member"));
    if constexpr (std::is_same_v<Reduce, reduce::Mean>)
      result[u] /= static_cast<double>(holders[u]);
    if constexpr (E::kSigned) result[u] = std::abs(result[u]);
  }
  Normalize::apply(result);
  return result;
}

template <ImportanceEstimator E, GroupReduction Reduce = reduce::Mean,
          GroupNormalizer Normalize = normalize::Mean, class T>
std::vector<double> group_importance(const std::vector<GroupMember<T>>& members, Index units) {
  return group_importance<E, Reduce, Normalize, T>(std::span<const GroupMember<T>>(members), units);
}

}  // namespace vitc::importance
