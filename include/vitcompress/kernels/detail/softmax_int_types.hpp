// SPDX-License-Identifier: Apache-2.0
#pragma once
// The types of Int-2^n-Softmax (kernels/softmax_int.hpp) and the integer exponential it shares
// with ShiftGELU (kernels/gelu_int.hpp): policies, parameters, their preparation from a real
// scale, and the scalar exponential every SIMD path must equal. The formulas are documented in
// softmax_int.hpp.

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <string>
#include <string_view>
#include <type_traits>

#include "vitcompress/core/check.hpp"
#include "vitcompress/core/error.hpp"

namespace vitc::kernels {

// exp policy: I-ViT's Shiftmax exponential (ICCV 2023): ×log2(e) as x + x/2 − x/16 by shifts,
// then 2^f ≈ 1 + f/2 on the fractional part. Scores are clamped at 15 octaves below the maximum.
struct ShiftExp {
  static constexpr std::string_view kName = "shift";
  static constexpr int kClampSteps = 15;
};

// exp policy: I-BERT's i-exp (ICML 2021): exp(r) ≈ 0.35815147·(r + 2.70732)² + 1 on
// r ∈ (−ln 2, 0], shifted by the octave count. Scores are clamped at 30 octaves below the maximum.
struct PolyExp {
  static constexpr std::string_view kName = "poly";
  static constexpr int kClampSteps = 30;
};

// The constants of one integer exponential, prepared once from a real scale (prepare_int_exp).
// Plain data: build it with prepare_int_exp, do not edit fields by hand.
struct IntExpParams {
  std::int32_t clamp_steps = 15;  // n: octaves kept below the maximum
  std::int32_t pre_shift = 0;     // p: inputs are ⌊d / 2^p⌋ so that the divisor stays small
  std::int32_t divisor = 1;       // D = −x0_int >= 1 (one octave in input units)
  std::int32_t clamp = 1;         // Δ = n·D·2^p: inputs below −Δ count as −Δ
  std::uint32_t magic = 1;  // ⌊u / D⌋ = (u·magic mod 2^32) >> magic_shift for 0 <= u <= n·D
  std::int32_t magic_shift = 0;
  std::int32_t poly_b = 0;      // PolyExp: ⌊(0.96963238 / 0.35815147) / S'⌋
  std::int32_t poly_c = 0;      // PolyExp: ⌊(1 / 0.35815147) / S'²⌋
  std::int32_t mant_shift = 0;  // a: the mantissa is shifted left by a ...
  std::int32_t shift_bias = 0;  // ... then right by min(q + bias, 31)
  std::int32_t exp_bits = 15;   // E(0) ∈ [2^(bits−1), 2^bits): 15 (linear), 22 (log2)
  std::int32_t exp_max = 0;     // E(0)
};

// Output policy: linear probabilities, out ≈ round(p·(2^b − 1)), scale 1/(2^b − 1).
struct LinearProb {
  static constexpr std::string_view kName = "linear";
};

// Output policy: FQ-ViT's Log-Int-Softmax levels, p̂ = 2^−out, out = 2^b meaning p̂ = 0.
struct Log2Prob {
  static constexpr std::string_view kName = "log2";
};

// Everything softmax_int needs, prepared once by prepare_softmax (plain data; the policy types in
// the template arguments keep a Shiftmax parameter set from being used as an i-exp one).
template <class Exp, class Out>
struct SoftmaxParams {
  IntExpParams exp;
  std::int32_t out_bits = 8;
  // E(max(−d, −Δ)) for d = 0..255: every value an int8 row can produce. Used by the table path
  // for int8 scores; equal to the formula by construction (prepare_softmax evaluates it).
  std::array<std::int32_t, 256> int8_exp{};
};

namespace detail {

// Largest D for which the magic-number division stays exact in 32-bit lanes (checked again by
// prepare_int_exp, and at every D up to these bounds by the tests).
inline constexpr std::int32_t kShiftExpMaxDivisor = 4096;
inline constexpr std::int32_t kPolyExpMaxDivisor = 2048;

// The integer exponential of d ∈ [−Δ, 0] (d = score − row max, already clamped): E(d) ≈
// E(0)·exp(d·S), a non-negative integer below 2^exp_bits. This is the definition (see
// softmax_int.hpp).
template <class Exp>
[[nodiscard]] constexpr std::int32_t int_exp(const IntExpParams& p, std::int32_t d) noexcept {
  const std::int32_t y = d >> p.pre_shift;
  const std::int32_t n_d = p.clamp_steps * p.divisor;
  std::int32_t u;
  if constexpr (std::is_same_v<Exp, ShiftExp>) {
    const std::int32_t g = y + (y >> 1) - (y >> 4);  // y·log2(e) ≈ y·1.0111b, each shift a floor
    u = std::min(-g, n_d);
  } else {
    u = std::min(-y, n_d);
  }
  const std::int32_t q = u / p.divisor;  // octaves, 0..n
  const std::int32_t rem = u - q * p.divisor;
  std::int32_t mant;
  if constexpr (std::is_same_v<Exp, ShiftExp>) {
    mant = 2 * p.divisor - rem;  // 2·(r/2 − x0) with r = −rem: 2^f ≈ 1 + f/2
  } else {
    const std::int32_t r = -rem;
    mant = r * (r + p.poly_b) + p.poly_c;  // (r + b)·r + c, I-BERT's int_polynomial
  }
  return (mant << p.mant_shift) >> std::min(q + p.shift_bias, 31);
}

// floor(u / D) as the SIMD paths compute it (u·magic, low 32 bits, logical shift right).
[[nodiscard]] constexpr std::int32_t magic_divide(const IntExpParams& p, std::int32_t u) noexcept {
  return static_cast<std::int32_t>((static_cast<std::uint32_t>(u) * p.magic) >> p.magic_shift);
}

// Finds (magic, shift) such that ⌊u·magic / 2^shift⌋ = ⌊u/D⌋ for 0 <= u <= u_max with u·magic <
// 2^32. Returns false when no such pair exists.
[[nodiscard]] inline bool find_magic(std::int64_t d, std::int64_t u_max, std::uint32_t& magic,
                                     std::int32_t& shift) noexcept {
  for (int s = 31; s >= 0; --s) {
    const std::uint64_t two_s = std::uint64_t{1} << s;
    const std::uint64_t m =
        (two_s + static_cast<std::uint64_t>(d) - 1) / static_cast<std::uint64_t>(d);
    if (m > 0xFFFFFFFFull) continue;
    if (static_cast<std::uint64_t>(u_max) * m > 0xFFFFFFFFull) continue;
    const std::uint64_t err = m * static_cast<std::uint64_t>(d) - two_s;  // < D
    // u/D + u·err/(D·2^s) stays below the next integer when u·err < 2^s.
    if (static_cast<std::uint64_t>(u_max) * err >= two_s) continue;
    magic = static_cast<std::uint32_t>(m);
    shift = s;
    return true;
  }
  return false;
}

inline std::string scale_string(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

}  // namespace detail

// Prepares the integer exponential of inputs d (integers, real value d·scale, d <= 0).
//   clamp_steps   octaves kept (ShiftExp 15, PolyExp 30, ShiftGELU 23);
//   max_pre_shift how far the inputs may be shifted right to keep D within the exact range (0
//                 forbids it: then a scale too fine for 32-bit lanes throws);
//   exp_bits      E(0) lands in [2^(exp_bits−1), 2^exp_bits), exp_bits ∈ [15, 22].
// `who` names the caller's scale argument in error messages. Throws ArgumentError when the scale
// is not finite and positive, or cannot be represented.
template <class Exp>
[[nodiscard]] IntExpParams prepare_int_exp(double scale, int clamp_steps, int max_pre_shift,
                                           int exp_bits, const std::string& who) {
  VITC_ASSERT(exp_bits >= 15 && exp_bits <= 22);
  if (!(scale > 0.0) || !std::isfinite(scale))
    VITC_THROW(
        ArgumentError(who + " = " + detail::scale_string(scale) + ": must be finite and positive"));
  constexpr bool kShift = std::is_same_v<Exp, ShiftExp>;
  // x0 = −1 (one octave after the ×log2 e shifts) for ShiftExp, −0.6931 (−ln 2) for PolyExp.
  const double x0 = kShift ? 1.0 : 0.6931;
  const std::int32_t max_d = kShift ? detail::kShiftExpMaxDivisor : detail::kPolyExpMaxDivisor;
  IntExpParams p;
  p.clamp_steps = clamp_steps;
  double sp = scale;
  std::int64_t d = 0;
  for (p.pre_shift = 0;; ++p.pre_shift) {
    sp = std::ldexp(scale, p.pre_shift);
    d = static_cast<std::int64_t>(-std::floor(-x0 / sp));  // −⌊x0/S'⌋ with x0 < 0
    if (d <= max_d) break;
    if (p.pre_shift >= max_pre_shift)
      VITC_THROW(ArgumentError(who + " = " + detail::scale_string(scale) +
                               ": too fine for the integer exponential (one octave would be " +
                               std::to_string(d) + " input units; at most " +
                               std::to_string(max_d) + ")"));
  }
  p.divisor = static_cast<std::int32_t>(std::max<std::int64_t>(d, 1));
  const std::int64_t clamp =
      static_cast<std::int64_t>(clamp_steps) * p.divisor * (std::int64_t{1} << p.pre_shift);
  if (clamp > std::numeric_limits<std::int32_t>::max())
    VITC_THROW(ArgumentError(who + " = " + detail::scale_string(scale) +
                             ": too fine, the clamped input range exceeds 32 bits"));
  p.clamp = static_cast<std::int32_t>(clamp);
  if (!detail::find_magic(p.divisor, static_cast<std::int64_t>(clamp_steps) * p.divisor, p.magic,
                          p.magic_shift))
    VITC_THROW(ArgumentError(who + " = " + detail::scale_string(scale) +
                             ": no exact 32-bit division for divisor " +
                             std::to_string(p.divisor)));
  p.exp_bits = exp_bits;
  const std::int32_t kMaxE = (1 << exp_bits) - 1;
  if constexpr (kShift) {
    // E(0) = ((2D) << a) >> 1 = D·2^a, the largest such value below 2^exp_bits.
    p.mant_shift = 0;
    while ((std::int64_t{p.divisor} << (p.mant_shift + 1)) <= kMaxE) ++p.mant_shift;
    p.shift_bias = 1;
  } else {
    const double b = std::floor((0.96963238 / 0.35815147) / sp);
    const double c = std::floor((1.0 / 0.35815147) / (sp * sp));
    if (c > double(1 << 30) || b > double(1 << 30))
      VITC_THROW(ArgumentError(who + " = " + detail::scale_string(scale) +
                               ": polynomial constants exceed 30 bits"));
    p.poly_b = static_cast<std::int32_t>(b);
    p.poly_c = static_cast<std::int32_t>(c);
    // r·(r + b) + c must stay in (0, c] for r ∈ (−D, 0]: needs b >= D − 1 and a positive minimum.
    const std::int64_t r_min = -(p.divisor - 1);
    const std::int64_t r_vertex = std::clamp<std::int64_t>(-(p.poly_b / 2), r_min, 0);
    auto z = [&](std::int64_t r) { return r * (r + p.poly_b) + p.poly_c; };
    if (p.poly_b < p.divisor - 1 || std::min(z(r_min), z(r_vertex)) <= 0 || p.poly_c <= 0)
      VITC_THROW(ArgumentError(who + " = " + detail::scale_string(scale) +
                               ": too coarse for the i-exp polynomial"));
    if (p.poly_c <= kMaxE) {
      while ((std::int64_t{p.poly_c} << (p.mant_shift + 1)) <= kMaxE) ++p.mant_shift;
    } else {
      while ((p.poly_c >> p.shift_bias) > kMaxE) ++p.shift_bias;
    }
  }
  p.exp_max = detail::int_exp<Exp>(p, 0);
  return p;
}

}  // namespace vitc::kernels
