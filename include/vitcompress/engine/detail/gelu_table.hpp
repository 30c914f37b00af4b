// SPDX-License-Identifier: Apache-2.0
#pragma once
// TableGelu's table: the int8 code of GELU for every 16-bit code of the fc1 output.
//
// Why its 16-bit scale is fitted to the output: GELU's code changes only on [−L, U], where
// below −L it rounds to the zero point (|GELU(−L)| <= S_out/4) and above U it saturates (GELU(U)
// = hi + S_out). The 65536 codes span exactly [−L, U] (a 16-bit zero point places −L at −32768),
// so the bucket form (detail/bucket_table.hpp) cuts that range into 256 buckets of 256 codes
// with no unused half, and a bucket holds at most about 1.13·(hi + L)/(256·S_out) rises (GELU's
// slope is at most 1.13): 1.5 for an output range hi = 8, 2.7 for hi = 2, 4.2 for hi = 1. A
// symmetric scale of max(8, hi + S_out)/32767 spent codes below −L and above U and, for narrow
// output ranges, put a dozen rises into one bucket. The resolution is finer than that scale's
// everywhere: S_out/scale is 29 codes at hi = 0.3 (7.5 before), 107 at hi = 2 (35), 194 at
// hi = 8 (130).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "vitcompress/core/error.hpp"

namespace vitc::engine::detail {

struct GeluTable {
  double scale = 1.0;           // real value of one 16-bit step
  std::int32_t zero_point = 0;  // the 16-bit code of real 0
  // codes[c + 32768] for c in [−32768, 32767] (+ 4 bytes: AVX-512 gathers read 4), the uint8
  // output code − 128: clamp(round(GELU(x)/S_out) + zp, 0, 255) − 128, x = (c − zero_point)·scale,
  // in float arithmetic as the table has always been built.
  std::vector<std::int8_t> codes;
};

[[nodiscard]] inline double gelu_real(double x) noexcept {
  return 0.5 * x * (1.0 + std::erf(x * 0.70710678118654752440));
}

// The table for an int8 output of scale `out_scale` and zero point `out_zero_point` (uint8 codes
// 0..255, real range [lo, hi] with lo <= 0 <= hi).
[[nodiscard]] inline GeluTable make_gelu_table(double out_scale, std::int32_t out_zero_point) {
  if (!(out_scale > 0.0) || !std::isfinite(out_scale) || out_zero_point < 0 || out_zero_point > 255)
    VITC_THROW(
        ArgumentError("make_gelu_table: output scale must be finite and positive and the "
                      "zero point in [0, 255]"));
  const double hi = (255 - out_zero_point) * out_scale;
  // L: below its minimum at −0.7517, |GELU| falls towards 0 as x → −∞; bisection for
  // |GELU(−L)| = S_out/4.
  double a = 0.76, b = 40.0;
  for (int i = 0; i < 200; ++i) {
    const double m = 0.5 * (a + b);
    (-gelu_real(-m) > out_scale / 4 ? a : b) = m;
  }
  const double lower = b;
  // U: GELU is increasing above 0; bisection for GELU(U) = hi + S_out, from above by
  // hi + S_out + 1 (x − GELU(x) = x·Φ(−x) <= 0.17 for x >= 0).
  a = 0.0;
  b = hi + out_scale + 1.0;
  for (int i = 0; i < 200; ++i) {
    const double m = 0.5 * (a + b);
    (gelu_real(m) < hi + out_scale ? a : b) = m;
  }
  const double upper = b;
  GeluTable t;
  // 65534 steps over [−L, U]: one step of slack so that an integer zero point covers both ends.
  // Rounded to float, the scale the fc1 requantization receives, so both use the same steps.
  t.scale = static_cast<float>((upper + lower) / 65534.0);
  t.zero_point = static_cast<std::int32_t>(std::ceil(lower / t.scale - 32768.0));
  t.codes.assign(65536 + 4, 0);
  const auto so = static_cast<float>(out_scale);
  for (int code = -32768; code < 32768; ++code) {
    const auto x = static_cast<float>((code - t.zero_point) * t.scale);
    const float g = 0.5f * x * (1.0f + std::erf(x * 0.70710678118654752440f));
    const float q = std::nearbyint(g / so) + static_cast<float>(out_zero_point);
    t.codes[static_cast<std::size_t>(code + 32768)] =
        static_cast<std::int8_t>(static_cast<int>(std::clamp(q, 0.0f, 255.0f)) - 128);
  }
  return t;
}

}  // namespace vitc::engine::detail
