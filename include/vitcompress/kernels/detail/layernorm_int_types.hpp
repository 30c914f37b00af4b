// SPDX-License-Identifier: Apache-2.0
#pragma once
// Int-LayerNorm: parameters, the per-row statistics every path shares, and the scalar definition
// every SIMD path equals bit for bit. The formulas are documented in kernels/layernorm_int.hpp.

#include <algorithm>
#include <bit>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "vitcompress/core/check.hpp"
#include "vitcompress/core/tensor.hpp"
#include "vitcompress/kernels/isqrt.hpp"

namespace vitc::kernels {

// Everything layernorm_int needs, prepared once by prepare_layernorm. Plain data: build it with
// prepare_layernorm, do not edit fields by hand.
struct LayerNormParams {
  Index channels = 0;                   // C, the normalized dimension
  std::vector<std::uint8_t> ptf_shift;  // α_c ∈ [0, 3]: channel c holds x_c·2^α_c at the base scale
  std::vector<std::int16_t> ptf_scale;  // 2^α_c
  std::vector<std::int16_t> gain;       // G_c = round(γ_c·√C·2^(1+f) / S_out), |G_c| <= 32767
  std::vector<std::int16_t> bias;       // B_c = sat16(round(β_c·2^f / S_out) + 2^(f−1))
  std::int32_t frac_bits = 0;           // f ∈ [0, 6]
  std::uint64_t eps_q32 = 0;            // round(C·eps / s² · 2^32), s the base input scale
};

namespace detail {

// Significant bits of x̃ per row (row block floating point): Q = 13 for int8 inputs, so that
// every intermediate fits in int16; Q = 24 for int16 and int32 inputs.
template <class In>
inline constexpr int kLayerNormRowBits = std::is_same_v<In, std::int8_t> ? 13 : 24;
inline constexpr Index kLayerNormMaxChannels = Index{1} << 14;

// Row-wide constants: x̃_c = ⌊x_c·2^(α_c + shift)⌋, a_c = ⌊(x̃_c − mean)·2^up / 2^down⌋ (one of
// up, down is 0) and n_c = ⌊(a_c·recip + 2^14) / 2^15⌋ (recip = 0 for a row of zero spread).
struct LayerNormRow {
  std::int32_t shift = 0;  // λ = Q − bitlen(max_c |x_c|·2^α_c)
  std::int32_t mean = 0;
  std::int32_t up = 0, down = 0;
  std::int32_t recip = 0;
};

// λ from B = bitlen(max_c |x_c|·2^α_c).
template <class In>
[[nodiscard]] constexpr std::int32_t layernorm_row_shift(int max_bits) noexcept {
  return kLayerNormRowBits<In> - max_bits;
}

[[nodiscard]] constexpr std::int64_t floor_div64(std::int64_t a, std::int64_t b) noexcept {
  const std::int64_t q = a / b;
  return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

// ⌊v·2^k⌋ for a signed shift k (|v·2^k| < 2^24 here).
[[nodiscard]] constexpr std::int64_t shift_signed(std::int64_t v, int k) noexcept {
  return k >= 0 ? v * (std::int64_t{1} << k) : v >> -k;
}

// eps in units of x̃²: ⌊eps_q32·4^λ / 2^32⌋, saturated at 2^62.
[[nodiscard]] constexpr std::uint64_t layernorm_eps(std::uint64_t eps_q32, int shift) noexcept {
  const int k = 2 * shift - 32;
  if (k <= 0) return -k >= 64 ? 0 : eps_q32 >> -k;
  if (eps_q32 >= (std::uint64_t{1} << (62 - std::min(k, 62)))) return std::uint64_t{1} << 62;
  return eps_q32 << k;
}

// Mean, standard deviation and the fixed-point reciprocal, from S1 = Σx̃, S2 = Σx̃² of a row of
// C values at row shift λ, |x̃| < 2^row_bits.
[[nodiscard]] inline LayerNormRow layernorm_row(std::int64_t s1, std::int64_t s2, Index c,
                                                std::int32_t shift, int row_bits,
                                                std::uint64_t eps_q32) noexcept {
  LayerNormRow row;
  row.shift = shift;
  const std::int64_t mean = floor_div64(2 * s1 + c, 2 * c);  // round half up
  // Σ(x̃ − m)² = S2 − m·(2·S1 − C·m), exact: |x̃| < 2^24 and C <= 2^14 keep S2 and
  // m·(2·S1 − C·m) ≈ S1²/C below 2^62.
  const std::int64_t centered = s2 - mean * (2 * s1 - c * mean);
  VITC_DCHECK(centered >= 0);
  const std::uint64_t var = static_cast<std::uint64_t>(centered) + layernorm_eps(eps_q32, shift);
  // Small variances get 2t extra fractional bits so that std keeps about 15 significant bits:
  // sd = ⌊2^t·√var⌋, and |y_c·2^t| <= sd still holds (y_c² <= var).
  const int t = std::max(0, (30 - static_cast<int>(std::bit_width(var))) / 2);
  const std::uint64_t sd = isqrt(var << (2 * t));
  row.mean = static_cast<std::int32_t>(mean);
  if (sd == 0) return row;  // zero spread: every n_c is 0
  // |y·2^t| < 2^bits with bits = min(bitlen(sd), row_bits + 1 + t) (|y| <= sd·2^−t, and
  // |y| < 2^(row_bits+1)); a = y·2^(t+15−bits) then fills 15 bits without overflow, and
  // R = 2^(14+bits)/sd makes n = a·R/2^15 ≈ 2^14·y/std.
  const int bits = std::min(static_cast<int>(std::bit_width(sd)), row_bits + 1 + t);
  const int net = t + 15 - bits;
  row.up = std::max(0, net);
  row.down = std::max(0, -net);
  row.recip = static_cast<std::int32_t>(
      std::min<std::uint64_t>((std::uint64_t{1} << (14 + bits)) / sd, 32767));
  return row;
}

// The output stage shared by every path: n → int8 for channel c.
[[nodiscard]] constexpr std::int8_t layernorm_out(std::int32_t n, std::int32_t gain,
                                                  std::int32_t bias, std::int32_t frac) noexcept {
  const std::int32_t t = (n * gain + (1 << 14)) >> 15;
  const std::int32_t h = std::clamp(t + bias, -32768, 32767);
  return static_cast<std::int8_t>(std::clamp(h >> frac, -128, 127));
}

// n_c from x̃_c.
[[nodiscard]] constexpr std::int32_t layernorm_n(const LayerNormRow& row,
                                                 std::int64_t xt) noexcept {
  const std::int32_t a = static_cast<std::int32_t>(shift_signed(xt - row.mean, row.up - row.down));
  return (a * row.recip + (1 << 14)) >> 15;
}

// bitlen(max_c |x_c|·2^α_c) of one row (|x|·2^α <= 2^34).
template <class In>
[[nodiscard]] int layernorm_max_bits(const In* x, const std::uint8_t* alpha, Index c) noexcept {
  std::uint64_t m = 0;
  for (Index i = 0; i < c; ++i) {
    const std::int64_t v = x[i];
    m = std::max(m, static_cast<std::uint64_t>(v < 0 ? -v : v) << alpha[i]);
  }
  return static_cast<int>(std::bit_width(m));
}

// One row of the definition: x and y hold C values.
template <class In>
void layernorm_row_scalar(const LayerNormParams& p, const In* x, std::int8_t* y) noexcept {
  const Index c = p.channels;
  const std::uint8_t* alpha = p.ptf_shift.data();
  const std::int32_t shift = layernorm_row_shift<In>(layernorm_max_bits(x, alpha, c));
  std::int64_t s1 = 0, s2 = 0;
  for (Index i = 0; i < c; ++i) {
    const std::int64_t v = shift_signed(x[i], alpha[i] + shift);
    s1 += v;
    s2 += v * v;
  }
  const LayerNormRow row = layernorm_row(s1, s2, c, shift, kLayerNormRowBits<In>, p.eps_q32);
  for (Index i = 0; i < c; ++i) {
    const auto ch = static_cast<std::size_t>(i);
    const std::int32_t n = layernorm_n(row, shift_signed(x[i], alpha[i] + shift));
    y[i] = layernorm_out(n, p.gain[ch], p.bias[ch], p.frac_bits);
  }
}

}  // namespace detail
}  // namespace vitc::kernels
