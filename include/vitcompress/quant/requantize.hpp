// SPDX-License-Identifier: Apache-2.0
#pragma once
// Requantization parameters: from the float scales of a quantized linear layer to the integer
// multiplier, shift and bias the int8 GEMM's output stage consumes (kernels/output_stage.hpp).
//
// A linear layer y = x·Wᵀ + b with x quantized at (s_x, z_x) (asymmetric), W symmetric with one
// scale s_w[n] per output channel (or one for the tensor), and y wanted at (s_y, z_y) computes
//
// clang-format off
//   acc[n]  = Σ_k (q_x[k] − z_x)·q_w[n, k]                          exact int32 (the GEMM)
//   bias[n] = round(b[n] / (s_x·s_w[n]))                             the bias at the accumulator scale
//   y[n]    ≈ s_x·s_w[n]·(acc[n] + bias[n])
//   M[n]    = fixed_point_from_scale(s_x·s_w[n] / s_y)               (kernels/fixed_point.hpp)
//   q_y[n]  = clamp(z_y + multiply_by_fixed_point(acc[n] + bias[n], M[n]), qmin, qmax)
// clang-format on
//
// i.e. the output pipeline OutputBiasAdd{bias} → OutputRequantizePerChannel{M} →
// OutputAddZeroPoint{z_y} → OutputSaturatingCast<int8_t or uint8_t>. The ratio is formed in double
// and converted once by the kernels' own fixed_point_from_scale (there is one definition of the
// fixed-point format in the library), so M[n] represents it to within half a unit of the
// multiplier's last place: |M.multiplier·2^(−31−M.shift) − ratio| <= 2^(−32−M.shift).
//
// Block-wise (per-group) weight scales have no per-channel requantization: a block-wise GEMM scales
// each group's partial sum (as ggml does) and is not covered here. Errors: a non-finite or
// non-positive scale, a ratio >= 2^31, or a bias whose integer form exceeds int32 throw
// ArgumentError naming the layer.

#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "vitcompress/core/error.hpp"
#include "vitcompress/kernels/fixed_point.hpp"

namespace vitc::quant {

struct RequantParams {
  std::vector<kernels::FixedPointMultiplier> multipliers;  // M[n]
  std::vector<std::int32_t> bias;                          // bias[n] at scale s_x·s_w[n]
  std::int32_t output_zero_point = 0;                      // z_y
};

// weight_scales: one per output channel, or a single one for the whole tensor (then `channels`
// gives N). bias: empty (no bias) or N values.
[[nodiscard]] inline RequantParams make_requant_params(
    float input_scale, std::span<const float> weight_scales, std::span<const float> bias,
    float output_scale, std::int32_t output_zero_point, std::size_t channels,
    const std::string& what) {
  const auto positive = [&](double v, const std::string& name) {
    if (!(v > 0.0) || !std::isfinite(v))
      VITC_THROW(ArgumentError(what + ": " + name + " = " + std::to_string(v) +
                               " is not finite and positive"));
  };
  positive(input_scale, "input scale");
  positive(output_scale, "output scale");
  if (weight_scales.size() != 1 && weight_scales.size() != channels)
    VITC_THROW(ArgumentError(what + ": " + std::to_string(weight_scales.size()) +
                             " weight scales for " + std::to_string(channels) + " channels"));
  if (!bias.empty() && bias.size() != channels)
    VITC_THROW(ArgumentError(what + ": " + std::to_string(bias.size()) + " biases for " +
                             std::to_string(channels) + " channels"));
  RequantParams out;
  out.output_zero_point = output_zero_point;
  out.multipliers.reserve(channels);
  out.bias.assign(channels, 0);
  const std::string name = what + ": requantization scale";
  for (std::size_t n = 0; n < channels; ++n) {
    const double sw = weight_scales[weight_scales.size() == 1 ? 0 : n];
    positive(sw, "weight scale " + std::to_string(n));
    const double acc_scale = static_cast<double>(input_scale) * sw;
    out.multipliers.push_back(kernels::fixed_point_from_scale(
        acc_scale / static_cast<double>(output_scale), name.c_str()));
    if (!bias.empty()) {
      if (!std::isfinite(bias[n]))
        VITC_THROW(ArgumentError(what + ": bias " + std::to_string(n) + " is not finite"));
      const double b = std::nearbyint(static_cast<double>(bias[n]) / acc_scale);
      if (std::abs(b) > 2147483647.0)
        VITC_THROW(ArgumentError(what + ": bias " + std::to_string(n) +
                                 " does not fit int32 at the accumulator scale"));
      out.bias[n] = static_cast<std::int32_t>(b);
    }
  }
  return out;
}

}  // namespace vitc::quant
