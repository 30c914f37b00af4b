// SPDX-License-Identifier: Apache-2.0
#pragma once
// Two-level per-group weight scales: every group scale of a row is a small integer multiple of
// one step per row, s[r][g] = σ_r·m[r][g] with m in [1, L], L = 2^b − 1 (b = group_scale_bits).
//
// Why: per-group scales refine per-channel ones where a row's ranges differ along K, but an
// integer engine cannot add the int32 partial sums of groups with unrelated float scales. With
// integer multiples the sum is exact: Σ_g s_g·P_g = σ·Σ_g m_g·P_g = σ·Σ_k (m_{g(k)}·w_k)·a_k, so a
// b_w-bit weight w times its group's m is one integer weight of a per-channel matrix with scale σ
// (|m·w| <= L·2^(b_w−1): 4-bit weights with 4-bit multiples stay within int8, 15·8 = 120). This
// is llama.cpp's k-quant idea (6-bit sub-block scales under one block scale) applied to the
// exactness of an integer GEMM instead of to bytes.
//
// snap_group_scales turns the observer's group scales into such scales: σ = max_g s_g / L (rounded
// up to 24 − b significant bits) and m_g = ⌈s_g/σ⌉ (at least 1), so no group's step shrinks (no
// value newly clipped) and the row's widest group keeps its step (to 2^−(23−b)). split_group_scales
// recovers σ and m from snapped scales (for the engine, from a checkpoint) and throws when they are
// not of that form.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "vitcompress/core/error.hpp"
#include "vitcompress/core/tensor.hpp"
#include "vitcompress/quant/quantizer.hpp"

namespace vitc::quant {

inline constexpr int kMaxGroupScaleBits = 8;

// The largest multiple, L = 2^bits − 1.
[[nodiscard]] constexpr std::int32_t group_scale_levels(int bits) noexcept {
  return (std::int32_t{1} << bits) - 1;
}

namespace detail {

inline void check_two_level(const TensorQuantParams& p, Index rows, int bits,
                            const std::string& what) {
  if (bits < 1 || bits > kMaxGroupScaleBits)
    VITC_THROW(ArgumentError(what + ": group_scale_bits = " + std::to_string(bits) +
                             " must be in [1, " + std::to_string(kMaxGroupScaleBits) + "]"));
  if (p.granularity.kind != GranularityKind::kGroup)
    VITC_THROW(ArgumentError(what + ": integer group scales need per-group granularity"));
  if (rows < 1 || p.num_groups() % rows != 0)
    VITC_THROW(ArgumentError(what + ": " + std::to_string(p.num_groups()) +
                             " group scales do not split into " + std::to_string(rows) + " rows"));
}

}  // namespace detail

// Rewrites the group scales of a [rows, ·] tensor quantized per group as σ_r·m (see above).
inline void snap_group_scales(TensorQuantParams& p, Index rows, int bits, const std::string& what) {
  detail::check_two_level(p, rows, bits, what);
  const Index per_row = p.num_groups() / rows;
  const double levels = group_scale_levels(bits);
  for (Index r = 0; r < rows; ++r) {
    float* s = p.scales.data() + r * per_row;
    const double top = *std::max_element(s, s + per_row);
    // σ rounded up to 24 − bits significant bits: every σ·m (m <= L < 2^bits) is then exact in
    // float, so split_group_scales recovers σ and m exactly and snapping is idempotent.
    int e = 0;
    (void)std::frexp(top / levels, &e);
    const int keep = 24 - bits;
    const double step = std::ldexp(std::ceil(std::ldexp(top / levels, keep - e)), e - keep);
    for (Index g = 0; g < per_row; ++g) {
      // Rounded up, less a float's rounding error, so that a multiple stays itself.
      const double m = std::clamp(std::ceil(s[g] / step - 1e-6), 1.0, levels);
      s[g] = static_cast<float>(step * m);
    }
  }
}

// σ_r and m[r][g] of snapped scales: row_scale[r] = σ_r, multipliers[r·per_row + g] = m.
struct GroupScaleSplit {
  std::vector<float> row_scale;
  std::vector<std::int32_t> multipliers;
};

// Throws ArgumentError naming `what` unless every group scale is σ_r·m with m in [1, L], σ_r the
// row's largest scale / L (to a relative 1e-5, for scales written elsewhere; snapped ones are
// exact).
[[nodiscard]] inline GroupScaleSplit split_group_scales(const TensorQuantParams& p, Index rows,
                                                        int bits, const std::string& what) {
  detail::check_two_level(p, rows, bits, what);
  const Index per_row = p.num_groups() / rows;
  const std::int32_t levels = group_scale_levels(bits);
  GroupScaleSplit out;
  out.row_scale.resize(static_cast<std::size_t>(rows));
  out.multipliers.resize(static_cast<std::size_t>(rows * per_row));
  for (Index r = 0; r < rows; ++r) {
    const float* s = p.scales.data() + r * per_row;
    const double step = static_cast<double>(*std::max_element(s, s + per_row)) / levels;
    out.row_scale[static_cast<std::size_t>(r)] = static_cast<float>(step);
    for (Index g = 0; g < per_row; ++g) {
      const double ratio = s[g] / step;
      const double m = std::round(ratio);
      if (!(m >= 1 && m <= levels && std::abs(ratio - m) <= 1e-5 * m))
        VITC_THROW(ArgumentError(
            what + ": group scale " + std::to_string(r * per_row + g) + " is " +
            std::to_string(ratio) + " times the row's step, not an integer multiple in [1, " +
            std::to_string(levels) + "] (quantize with group_scale_bits = " + std::to_string(bits) +
            ")"));
      out.multipliers[static_cast<std::size_t>(r * per_row + g)] = static_cast<std::int32_t>(m);
    }
  }
  return out;
}

}  // namespace vitc::quant
