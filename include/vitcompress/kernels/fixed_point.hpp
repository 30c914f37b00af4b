// SPDX-License-Identifier: Apache-2.0
#pragma once
// Fixed-point requantization: multiplying an int32 by a real scale with integer arithmetic only.
//
// Why: an int8 GEMM accumulates in int32 at scale s_a·s_w; the next layer wants int8 at scale
// s_out. The factor s = s_a·s_w / s_out is a real number, applied here as an int32 multiplier and
// a power-of-two shift, with gemmlowp's rounding, so that every arch and every engine computes the
// same integer bit for bit.
//
// A FixedPointMultiplier {multiplier, shift} represents the real number
//
//     s = multiplier · 2^(−31 − shift),   multiplier in [2^30, 2^31) (or 0), shift in [−31, 31],
//
// and y = apply(x) is, for int32 x (the formula tested against a 128-bit evaluation):
//
//     l = max(−shift, 0),  r = max(shift, 0)
//     x' = clamp(x · 2^l, INT32_MIN, INT32_MAX)                         (saturating left shift)
//     h  = SRDHM(x', multiplier)                                         (gemmlowp fixedpoint.h)
//        = floor((x' · multiplier + 2^30) / 2^31)   (nearest, ties toward +infinity),
//          except SRDHM(INT32_MIN, INT32_MIN) = INT32_MAX (the only overflow)
//     y  = RDBPOT(h, r) = round_half_away_from_zero(h / 2^r)
//
// RDBPOT is computed as (h >> r) + (remainder > threshold), remainder = h & (2^r − 1),
// threshold = (2^r − 1) >> 1, plus 1 when h < 0; SRDHM as (x'·m + nudge) / 2^31 with C++
// truncating division and nudge = 2^30 for a non-negative product, 1 − 2^30 otherwise (which
// equals the floor formula above: −1.5 becomes −1, +1.5 becomes 2). These are exactly gemmlowp's
// SaturatingRoundingDoublingHighMul and RoundingDivideByPOT (equal to ARM's VQRDMULH and a
// rounding shift). y rounds twice, so it can differ from
// round(x · s) by one unit when h lands on a tie; that is the defined behaviour, not an error.
//
// fixed_point_from_scale(s) derives the pair from a real scale: s = f·2^e with f in [0.5, 1),
// multiplier = round(f·2^31) (a carry to 2^31 renormalizes to 2^30 and e + 1), shift = −e. The
// represented value is within half a unit of the multiplier's last place of s, i.e.
// |multiplier·2^(−31−shift) − s| <= 2^(−32−shift). Scales below 2^−32 keep shift = 31 and lose
// precision (down to multiplier 0); scales >= 2^31, negative, NaN or infinite throw.

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include "vitcompress/core/error.hpp"

namespace vitc::kernels {

struct FixedPointMultiplier {
  std::int32_t multiplier = 0;  // in [2^30, 2^31), or 0 for the scale 0
  std::int32_t shift = 0;       // right shift if positive, saturating left shift if negative

  // The real number represented: multiplier · 2^(−31 − shift).
  [[nodiscard]] double to_double() const noexcept {
    return std::ldexp(static_cast<double>(multiplier), -31 - shift);
  }
  friend bool operator==(const FixedPointMultiplier&, const FixedPointMultiplier&) = default;
};

// gemmlowp's SaturatingRoundingDoublingHighMul: floor((a·b + 2^30) / 2^31), saturating the single
// overflow case a = b = INT32_MIN to INT32_MAX.
[[nodiscard]] constexpr std::int32_t saturating_rounding_doubling_high_mul(
    std::int32_t a, std::int32_t b) noexcept {
  const bool overflow = a == b && a == std::numeric_limits<std::int32_t>::min();
  const std::int64_t ab = static_cast<std::int64_t>(a) * b;
  const std::int64_t nudge = ab >= 0 ? (std::int64_t{1} << 30) : (1 - (std::int64_t{1} << 30));
  const auto high = static_cast<std::int32_t>((ab + nudge) / (std::int64_t{1} << 31));
  return overflow ? std::numeric_limits<std::int32_t>::max() : high;
}

// gemmlowp's RoundingDivideByPOT: round_half_away_from_zero(x / 2^exponent), exponent in [0, 31].
[[nodiscard]] constexpr std::int32_t rounding_divide_by_pot(std::int32_t x, int exponent) noexcept {
  const auto mask = static_cast<std::int32_t>((std::int64_t{1} << exponent) - 1);
  const std::int32_t remainder = x & mask;
  const std::int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
  return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

// clamp(x · 2^shift) to int32, shift in [0, 31].
[[nodiscard]] constexpr std::int32_t saturating_left_shift(std::int32_t x, int shift) noexcept {
  const std::int64_t wide = static_cast<std::int64_t>(x) * (std::int64_t{1} << shift);
  constexpr std::int64_t lo = std::numeric_limits<std::int32_t>::min();
  constexpr std::int64_t hi = std::numeric_limits<std::int32_t>::max();
  return static_cast<std::int32_t>(wide < lo ? lo : (wide > hi ? hi : wide));
}

// y = RDBPOT(SRDHM(clamp(x·2^l), multiplier), r): see the header comment.
[[nodiscard]] constexpr std::int32_t multiply_by_fixed_point(std::int32_t x,
                                                             std::int32_t multiplier,
                                                             std::int32_t shift) noexcept {
  const int left = shift < 0 ? -shift : 0;
  const int right = shift > 0 ? shift : 0;
  return rounding_divide_by_pot(
      saturating_rounding_doubling_high_mul(saturating_left_shift(x, left), multiplier), right);
}

[[nodiscard]] constexpr std::int32_t multiply_by_fixed_point(std::int32_t x,
                                                             FixedPointMultiplier m) noexcept {
  return multiply_by_fixed_point(x, m.multiplier, m.shift);
}

// The multiplier and shift that represent `scale` (see the header comment). `what` names the
// scale in the error message. Throws ArgumentError for a negative, non-finite or >= 2^31 scale.
[[nodiscard]] inline FixedPointMultiplier fixed_point_from_scale(double scale,
                                                                 const char* what = "scale") {
  if (!std::isfinite(scale) || scale < 0.0)
    VITC_THROW(ArgumentError(std::string(what) + " = " + std::to_string(scale) +
                             ": a requantization scale must be finite and >= 0"));
  if (scale == 0.0) return {0, 0};
  int exponent = 0;
  const double fraction = std::frexp(scale, &exponent);  // scale = fraction · 2^exponent
  auto q = static_cast<std::int64_t>(std::llround(std::ldexp(fraction, 31)));
  if (q == (std::int64_t{1} << 31)) {
    q >>= 1;
    ++exponent;
  }
  if (exponent > 31)
    VITC_THROW(ArgumentError(std::string(what) + " = " + std::to_string(scale) +
                             ": a requantization scale must be below 2^31"));
  int shift = -exponent;
  if (shift > 31) {
    // Below 2^-32: keep the largest shift and round the multiplier down to fewer bits.
    q = std::llround(std::ldexp(scale, 62));  // multiplier · 2^-62 with multiplier < 2^30
    shift = 31;
  }
  return {static_cast<std::int32_t>(q), shift};
}

}  // namespace vitc::kernels
