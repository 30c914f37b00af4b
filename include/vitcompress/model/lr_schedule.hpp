// SPDX-License-Identifier: Apache-2.0
#pragma once
// Learning-rate schedule: linear warm-up from `warmup_start` to `base` over `warmup_steps`, then a
// half cosine from `base` down to `min` at `total_steps` (timm's default for ViTs).

#include <algorithm>
#include <cmath>
#include <numbers>

#include "vitcompress/core/error.hpp"

namespace vitc::model {

struct WarmupCosine {
  double base = 1e-3;
  double min = 1e-5;
  double warmup_start = 1e-6;
  long warmup_steps = 0;
  long total_steps = 1;

  void validate() const {
    if (!(base >= 0 && min >= 0 && warmup_start >= 0))
      VITC_THROW(ArgumentError("learning rates must be >= 0"));
    if (warmup_steps < 0 || total_steps < 1 || warmup_steps > total_steps)
      VITC_THROW(
          ArgumentError("schedule: need 0 <= warmup_steps <= total_steps and total_steps >= 1"));
  }

  // The learning rate of step `step` (0-based).
  [[nodiscard]] double operator()(long step) const noexcept {
    if (step < warmup_steps)
      return warmup_start +
             (base - warmup_start) * static_cast<double>(step) / static_cast<double>(warmup_steps);
    const long span = std::max(1L, total_steps - warmup_steps);
    const double t =
        std::clamp(static_cast<double>(step - warmup_steps) / static_cast<double>(span), 0.0, 1.0);
    return min + 0.5 * (base - min) * (1 + std::cos(std::numbers::pi * t));
  }
};

}  // namespace vitc::model
