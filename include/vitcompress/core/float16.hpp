// SPDX-License-Identifier: Apache-2.0
#pragma once
// 16-bit floating-point formats as bit patterns: IEEE 754 binary16 ("half", FP16) and bfloat16.
//
// Checkpoints store weights as F16 or BF16 to halve their size, and the FP16 quantization path
// rounds float weights to half. Neither format is a C++20 arithmetic type, so this header only
// converts between a float and the 16-bit pattern; arithmetic happens in float.
//
//   binary16:  1 sign, 5 exponent (bias 15), 10 mantissa bits. Largest finite 65504, smallest
//              normal 2^-14, smallest subnormal 2^-24.
//   bfloat16:  1 sign, 8 exponent (bias 127), 7 mantissa bits: the top half of a float, with the
//              float's range and 8 significant bits.
//
// Rounding: float -> 16 bits rounds to nearest, ties to even (the IEEE default and what the F16C
// instruction `vcvtps2ph` does with _MM_FROUND_TO_NEAREST_INT). Values that round past the largest
// finite number become ±inf; values below half the smallest subnormal become ±0; the sign of zero
// is kept.
//
// NaN: a NaN stays a NaN of the same sign. float -> 16 bits keeps the top payload bits and sets
// the quiet bit (bit 9 of binary16, bit 6 of bfloat16), exactly as F16C does, so a signalling NaN
// becomes quiet and a NaN whose payload lives only in the dropped low bits does not turn into inf.
// 16 bits -> float is exact and keeps every bit, NaN payload included. Hence half -> float -> half
// is the identity on all 65536 patterns except signalling NaNs (quiet bit clear, mantissa
// non-zero), which come back with the quiet bit set; the same holds for bfloat16.
//
// Plain integer code: constexpr, noexcept, no intrinsics, the same bits on every target.

#include <bit>
#include <cstdint>

namespace vitc {

// float -> binary16, round to nearest even.
constexpr std::uint16_t float_to_half_bits(float value) noexcept {
  const std::uint32_t x = std::bit_cast<std::uint32_t>(value);
  const std::uint32_t sign = (x >> 16) & 0x8000u;
  const std::uint32_t abs = x & 0x7fffffffu;

  if (abs >= 0x7f800000u) {  // inf or NaN
    if (abs == 0x7f800000u) return static_cast<std::uint16_t>(sign | 0x7c00u);
    return static_cast<std::uint16_t>(sign | 0x7c00u | 0x0200u | ((abs >> 13) & 0x03ffu));
  }
  // 0x477ff000 = 65520, halfway between 65504 (odd mantissa) and 65536: the tie goes to the even
  // neighbour, which is past the largest finite half.
  if (abs >= 0x477ff000u) return static_cast<std::uint16_t>(sign | 0x7c00u);
  if (abs >= 0x38800000u) {  // >= 2^-14: a normal half
    // Re-bias the exponent (127 - 15 = 112, 112 << 23 = 0x38000000) and round the 13 dropped
    // mantissa bits to nearest even; a carry runs into the exponent, which is what we want.
    const std::uint32_t rebased = abs - 0x38000000u;
    const std::uint32_t rounded = rebased + 0x0fffu + ((rebased >> 13) & 1u);
    return static_cast<std::uint16_t>(sign | (rounded >> 13));
  }
  // 0x33000000 = 2^-25, half the smallest subnormal: a tie with zero, which is even.
  if (abs <= 0x33000000u) return static_cast<std::uint16_t>(sign);
  // Subnormal half: the result is round(|value| / 2^-24). With the implicit bit restored the float
  // is mant * 2^(exp - 150), so the quotient is mant >> (126 - exp); exp is in [102, 112] here.
  const std::uint32_t exp = abs >> 23;
  const std::uint32_t mant = (abs & 0x007fffffu) | 0x00800000u;
  const std::uint32_t shift = 126u - exp;  // 14..24
  std::uint32_t result = mant >> shift;
  const std::uint32_t rest = mant & ((1u << shift) - 1u);
  const std::uint32_t halfway = 1u << (shift - 1u);
  if (rest > halfway || (rest == halfway && (result & 1u))) ++result;  // may reach 0x400: 2^-14
  return static_cast<std::uint16_t>(sign | result);
}

// binary16 -> float, exact.
constexpr float half_bits_to_float(std::uint16_t bits) noexcept {
  const std::uint32_t sign = static_cast<std::uint32_t>(bits & 0x8000u) << 16;
  const std::uint32_t exp = (bits >> 10) & 0x1fu;
  std::uint32_t mant = bits & 0x03ffu;
  if (exp == 0x1fu) return std::bit_cast<float>(sign | 0x7f800000u | (mant << 13));  // inf, NaN
  if (exp != 0) return std::bit_cast<float>(sign | ((exp + 112u) << 23) | (mant << 13));
  if (mant == 0) return std::bit_cast<float>(sign);  // ±0
  // Subnormal: mant * 2^-24. Normalise so that the leading one sits at bit 10.
  std::uint32_t e = 113u;  // float exponent of 2^-14, the exponent of the leading bit at bit 10
  while ((mant & 0x0400u) == 0) {
    mant <<= 1;
    --e;
  }
  return std::bit_cast<float>(sign | (e << 23) | ((mant & 0x03ffu) << 13));
}

// float -> bfloat16, round to nearest even.
constexpr std::uint16_t float_to_bf16_bits(float value) noexcept {
  const std::uint32_t x = std::bit_cast<std::uint32_t>(value);
  if ((x & 0x7fffffffu) > 0x7f800000u)  // NaN: keep sign and top payload, set the quiet bit
    return static_cast<std::uint16_t>((x >> 16) | 0x0040u);
  // Adding 0x7fff plus the lowest kept bit rounds the dropped half to nearest even; a carry out of
  // the largest finite value lands exactly on inf (0x7f80), as it should.
  return static_cast<std::uint16_t>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

// bfloat16 -> float, exact.
constexpr float bf16_bits_to_float(std::uint16_t bits) noexcept {
  return std::bit_cast<float>(static_cast<std::uint32_t>(bits) << 16);
}

}  // namespace vitc
