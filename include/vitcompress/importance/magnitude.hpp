// SPDX-License-Identifier: Apache-2.0
#pragma once
// Magnitude importance: a unit matters as much as its weights are large.
//
// Magnitude<P> contributes |w|^P per element, so a member's local score for a unit is the P-th
// power of the unit's L_P norm in that member: Magnitude<1> is the L1 norm, Magnitude<2> the
// squared Frobenius norm of the channel (row, column or filter) — the ranking of the EfficientViT
// study, since the square root does not change an order. With reduce::Sum, Magnitude<2> scores a
// unit by the squared Frobenius norm of everything it owns across the group; Torch-Pruning's
// GroupMagnitudeImportance(p) computes the same local score (Σ|w|^p). No statistic, no data: the
// cheapest estimator, and the only one that needs no calibration pass.

#include <cmath>
#include <string_view>

namespace vitc::importance {

template <int P>
struct Magnitude {
  static_assert(P == 1 || P == 2, "Magnitude<P>: P is 1 (L1) or 2 (L2, Frobenius)");
  static constexpr bool kNeedsStatistic = false;
  static constexpr bool kSigned = false;
  static constexpr std::string_view name() noexcept { return P == 1 ? "l1" : "l2"; }
  static constexpr double contribution(double w, double /*statistic*/) noexcept {
    if constexpr (P == 1)
      return w < 0 ? -w : w;
    else
      return w * w;
  }
};

using L1Magnitude = Magnitude<1>;
using L2Magnitude = Magnitude<2>;

}  // namespace vitc::importance
