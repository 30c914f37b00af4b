// SPDX-License-Identifier: Apache-2.0
#pragma once
// Integer GELU: policies, parameters and the scalar definition every SIMD path equals bit for
// bit. The formulas are documented in kernels/gelu_int.hpp.

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdlib>
#include <string_view>
#include <type_traits>
#include <vector>

#include "vitcompress/kernels/detail/softmax_int_types.hpp"

namespace vitc::kernels {

// I-BERT's I-GELU (ICML 2021): x·(1 + erf(x/√2))/2 with erf by the clipped second-order
// polynomial sgn(x)·[a·(min(|x|, −b) + b)² + 1], a = −0.2888, b = −1.769.
struct IGelu {
  static constexpr std::string_view kName = "igelu";
};

// I-ViT's ShiftGELU (ICCV 2023): x·σ(1.702·x), the sigmoid from the Shiftmax exponential.
struct ShiftGelu {
  static constexpr std::string_view kName = "shiftgelu";
  static constexpr int kClampSteps = 23;  // I-ViT IntGELU: n = 23
};

// Everything gelu_int needs for inputs of type In (int8_t or int32_t), prepared once by
// prepare_gelu. Plain data: build it with prepare_gelu, do not edit fields by hand.
template <class Policy, class In>
struct GeluParams {
  // Front: x_p = ⌊clamp(x, in_min, in_max) / 2^pre_shift⌋ ∈ [−2^15, 2^15).
  std::int32_t pre_shift = 0;
  std::int32_t in_min = 0, in_max = 0;
  // IGelu, at scale S_e = S_p/1.4142 (S_p = S·2^pre_shift).
  std::int32_t erf_b = 0;      // ⌊−1.769 / S_e⌋ < 0
  std::int32_t erf_c = 0;      // ⌊(1/−0.2888) / S_e²⌋ < 0
  std::int32_t erf_shift = 0;  // n: the erf term is ⌊y / 2^n⌋
  std::int32_t erf_one = 0;    // ⌊1 / S_erf⌋, S_erf = −0.2888·S_e²·2^n (< 0)
  // ShiftGelu: the Shiftmax exponential at scale 1.702·S_p, 23 octaves, 15 bits.
  IntExpParams exp;
  // Requantization of g = x_p·T to int8:
  //   out = sat8(⌊(⌊clamp(g, −g_limit, g_limit) / 2^g_shift⌋·multiplier + 2^(out_shift−1))
  //              / 2^out_shift⌋)
  std::int32_t g_limit = 0;
  std::int32_t g_shift = 0;
  std::int32_t multiplier = 0;  // |multiplier| < 2^15, negative for IGelu
  std::int32_t out_shift = 1;   // in [1, 30]
  // int8 inputs: the output for x = −128..127 (index x + 128), equal to the formula by
  // construction (prepare_gelu evaluates it). Empty use for int32 inputs.
  std::array<std::int32_t, 256> int8_table{};
  // ShiftGelu with int32 inputs: the output for every x_p ∈ [−2^15, 2^15) (index x_p + 2^15),
  // then 3 zero bytes so that a 32-bit gather at any index stays inside; built by prepare_gelu
  // from the definition and read by the Avx2 / Avx512Vnni paths (64 KiB). Empty otherwise.
  std::vector<std::int8_t> int32_table;
};

namespace detail {

// The size of GeluParams::int32_table when it is built.
inline constexpr std::size_t kGeluInt32TableSize = (std::size_t{1} << 16) + 3;

template <class Policy, class In>
[[nodiscard]] constexpr std::int32_t gelu_requantize(const GeluParams<Policy, In>& p,
                                                     std::int32_t g) noexcept {
  const std::int32_t gc = std::clamp(g, -p.g_limit, p.g_limit);
  const std::int32_t t =
      ((gc >> p.g_shift) * p.multiplier + (std::int32_t{1} << (p.out_shift - 1))) >> p.out_shift;
  return std::clamp(t, -128, 127);
}

// ⌊num·2^15 / den⌋ for 0 <= num <= den < 2^16: the sigmoid of ShiftGelu, in [0, 2^15].
[[nodiscard]] constexpr std::int32_t sigmoid_divide(std::int32_t num, std::int32_t den) noexcept {
  return static_cast<std::int32_t>((std::int64_t{num} << 15) / den);
}

// The definition, up to the requantization: g for one input value (|g| <= 2^30 + 2^16).
template <class Policy, class In>
[[nodiscard]] constexpr std::int32_t gelu_int_g_xp(const GeluParams<Policy, In>& p,
                                                   std::int32_t xp) noexcept {
  std::int32_t g;
  if constexpr (std::is_same_v<Policy, IGelu>) {
    const std::int32_t a = std::min(xp < 0 ? -xp : xp, -p.erf_b);
    std::int32_t y = (a + p.erf_b) * (a + p.erf_b) + p.erf_c;
    y = xp > 0 ? y : (xp < 0 ? -y : 0);  // sgn(x)·y
    g = xp * ((y >> p.erf_shift) + p.erf_one);
  } else {
    const std::int32_t a = std::max(xp < 0 ? xp : -xp, -p.exp.clamp);  // −|x_p|, clamped
    const std::int32_t v = int_exp<ShiftExp>(p.exp, a);                // e^(−1.702|x|)
    const std::int32_t num = xp >= 0 ? p.exp.exp_max : v;
    g = xp * sigmoid_divide(num, p.exp.exp_max + v);
  }
  return g;
}

template <class Policy, class In>
[[nodiscard]] constexpr std::int32_t gelu_int_g(const GeluParams<Policy, In>& p,
                                                std::int32_t x) noexcept {
  return gelu_int_g_xp(p, std::clamp(x, p.in_min, p.in_max) >> p.pre_shift);
}

// The definition: one input value to its int8 output.
template <class Policy, class In>
[[nodiscard]] constexpr std::int8_t gelu_int_scalar(const GeluParams<Policy, In>& p,
                                                    std::int32_t x) noexcept {
  return static_cast<std::int8_t>(gelu_requantize(p, gelu_int_g(p, x)));
}

}  // namespace detail
}  // namespace vitc::kernels
