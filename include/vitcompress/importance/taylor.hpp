// SPDX-License-Identifier: Apache-2.0
#pragma once
// First-order Taylor importance (Molchanov et al. 2019; PQV-Mobile's best estimator on DeiT).
//
// Removing a unit sets its weights w to zero; to first order the loss changes by -Σ w·∂L/∂w over
// the unit's weights. Taylor contributes w·g per element, where the statistic g is the gradient of
// the loss averaged over calibration batches (accumulate one gradient per batch in a RunningMeans,
// running_mean.hpp, and pass its mean). The estimator is signed: with reduce::Sum the score of a
// unit is |Σ_group w·g| (Torch-Pruning's multivariable=True); see group_importance.hpp for how
// the sign travels through the reductions.

#include <string_view>

namespace vitc::importance {

struct Taylor {
  static constexpr bool kNeedsStatistic = true;  // the mean gradient dL/dw
  static constexpr bool kSigned = true;
  static constexpr std::string_view name() noexcept { return "taylor"; }
  static constexpr double contribution(double w, double mean_gradient) noexcept {
    return w * mean_gradient;
  }
};

}  // namespace vitc::importance
