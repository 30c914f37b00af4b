// SPDX-License-Identifier: Apache-2.0
#pragma once
// Int-LayerNorm SIMD paths: the 32-bit-lane body (detail/layernorm_int_body.inc) compiled for
// xsimd, AVX2 and AVX-512, and 16-bit-lane paths for int8 inputs on AVX2 and AVX-512BW: with
// |x̃| < 2^13 (Q = 13 for int8) every intermediate of the definition fits in int16, so the sums are
// vpmaddwd and the normalization and affine steps are vpmulhrsw / vpaddsw, exactly the
// definition's ⌊(a·b + 2^14) / 2^15⌋ and 16-bit saturation. Both also run int16 rows with
// |x·2^α| < 2^14 on 16-bit lanes (layernorm_row_i16_16: the engine's residual stream).

#include <algorithm>
#include <bit>
#include <cstdint>
#include <type_traits>

#include "vitcompress/core/tensor.hpp"
#include "vitcompress/kernels/arch.hpp"
#include "vitcompress/kernels/detail/layernorm_int_types.hpp"
#include "vitcompress/kernels/detail/nonlinear_int_ops.hpp"
#include "vitcompress/kernels/detail/softmax_int_simd.hpp"

// See detail/softmax_int_simd.hpp (GCC bug 105593).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

namespace vitc::kernels::detail {

// Rows in blocks: the statistics of every row of a block first, then their normalization, so
// that the scalar chain of one row (mean, isqrt, reciprocal: three to four dependent divisions)
// runs beside the vector statistics of the next rows instead of stalling its own normalization.
template <class In, class Stats, class Apply>
void layernorm_rows_blocked(Stats&& stats, Apply&& apply, const In* x, Index x_stride,
                            std::int8_t* y, Index y_stride, Index rows) {
  constexpr Index kBlock = 8;
  LayerNormRow block[kBlock];
  for (Index r0 = 0; r0 < rows; r0 += kBlock) {
    const Index n = std::min(kBlock, rows - r0);
    for (Index r = 0; r < n; ++r) block[r] = stats(x + (r0 + r) * x_stride);
    for (Index r = 0; r < n; ++r) apply(block[r], x + (r0 + r) * x_stride, y + (r0 + r) * y_stride);
  }
}

// The statistics of an int16 row summed on 16-bit lanes: s1 = Σx', s2 = Σx'², mm = max|x'|
// (x' = x·2^α, |x'| < 2^14), so λ >= 10 and Σx̃ = 2^λ·s1, Σx̃² = 4^λ·s2.
[[nodiscard]] inline LayerNormRow i16_row(const LayerNormParams& p, std::int64_t s1,
                                          std::int64_t s2, std::uint32_t mm) noexcept {
  const std::int32_t shift =
      layernorm_row_shift<std::int16_t>(static_cast<int>(std::bit_width(mm)));
  return layernorm_row(s1 << shift, s2 << (2 * shift), p.channels, shift,
                       kLayerNormRowBits<std::int16_t>, p.eps_q32);
}

// The smallest row shift of the 16-bit int16 paths (|x'| < 2^14).
inline constexpr std::int32_t kI16NarrowShift = kLayerNormRowBits<std::int16_t> - 14;

// The constants of a = ⌊(x̃ − m)·2^up / 2^down⌋ on 16-bit lanes for an int16 row with row.shift
// >= kI16NarrowShift: a = ((x' − c1) << sl >> sr) − c2, with wrapping 16-bit arithmetic. With
// λ = row.shift, m = m_hi·2^λ + m_lo (0 <= m_lo < 2^λ) and x̃ − m = (x' − m_hi)·2^λ − m_lo
// (|x' − m_hi| < 2^15), a is, exactly:
//   down = 0:        (x' − m_hi)·2^(λ+up) − m_lo·2^up            (mod 2^16; |a| < 2^15)
//   0 < down < λ:    (x' − m_hi)·2^(λ−down) − ⌈m_lo / 2^down⌉    (mod 2^16)
//   down >= λ:       ⌊(x' − m_hi − [m_lo > 0]) / 2^(down−λ)⌋     (m_lo/2^λ < 1 never crosses
//                                                                 an integer)
struct I16Narrow {
  std::int16_t c1 = 0, c2 = 0;
  std::int32_t sl = 0, sr = 0;
};

[[nodiscard]] inline I16Narrow i16_narrow(const LayerNormRow& row) noexcept {
  const std::int32_t lam = row.shift;
  const std::int32_t m_hi = row.mean >> lam, m_lo = row.mean - (m_hi << lam);
  std::int32_t c1 = m_hi;
  std::int64_t c2 = 0;
  I16Narrow n;
  if (row.down == 0) {
    n.sl = lam + row.up;
    c2 = std::int64_t{m_lo} << row.up;
  } else if (row.down < lam) {
    n.sl = lam - row.down;
    c2 = (m_lo + (std::int64_t{1} << row.down) - 1) >> row.down;
  } else {
    c1 = m_hi + (m_lo > 0 ? 1 : 0);
    n.sr = row.down - lam;
  }
  n.c1 = static_cast<std::int16_t>(c1);
  n.c2 = static_cast<std::int16_t>(static_cast<std::uint16_t>(c2));
  return n;
}

}  // namespace vitc::kernels::detail

namespace vitc::kernels::detail::nl_xsimd {
#include "vitcompress/kernels/detail/layernorm_int_body.inc"
}  // namespace vitc::kernels::detail::nl_xsimd

#if VITC_HAVE_X86_TARGET_KERNELS

VITC_NL_BEGIN_AVX2
namespace vitc::kernels::detail::nl_avx2 {
#include "vitcompress/kernels/detail/layernorm_int_body.inc"

// x' = x·2^α for 16 channels from i (|x'| <= 1024).
inline __m256i layernorm_int8_prescaled(const std::int16_t* scale, const std::int8_t* x,
                                        Index i) noexcept {
  return _mm256_mullo_epi16(
      _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + i))),
      _mm256_loadu_si256(reinterpret_cast<const __m256i*>(scale + i)));
}

// The row statistics of one int8 row.
inline LayerNormRow layernorm_row_int8_16(const LayerNormParams& p, const std::int8_t* x) noexcept {
  const Index c = p.channels;
  const Index full = c - c % 16;
  // One pass: x' = x·2^α (|x'| <= 1024), its maximum magnitude and the sums of x' and x'²; with
  // λ >= 3, Σx̃ = 2^λ·Σx' and Σx̃² = 4^λ·Σx'² exactly.
  auto prescaled = [&](Index i) { return layernorm_int8_prescaled(p.ptf_scale.data(), x, i); };
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i vmax = _mm256_setzero_si256();
  std::int64_t s1 = 0, s2 = 0;
  constexpr Index kBlock = 512 * 16;  // a lane gains <= 2^21 per step
  for (Index b = 0; b < full; b += kBlock) {
    __m256i a1 = _mm256_setzero_si256(), a2 = _mm256_setzero_si256();
    const Index end = std::min(full, b + kBlock);
    for (Index i = b; i < end; i += 16) {
      const __m256i v = prescaled(i);
      vmax = _mm256_max_epi16(vmax, _mm256_abs_epi16(v));
      a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(v, ones));
      a2 = _mm256_add_epi32(a2, _mm256_madd_epi16(v, v));
    }
    s1 += Ops::reduce_add(a1);
    s2 += Ops::reduce_add(a2);
  }
  std::uint32_t mm = static_cast<std::uint32_t>(
      Ops::reduce_max(_mm256_max_epi32(_mm256_cvtepi16_epi32(_mm256_castsi256_si128(vmax)),
                                       _mm256_cvtepi16_epi32(_mm256_extracti128_si256(vmax, 1)))));
  for (Index i = full; i < c; ++i) {
    const std::int32_t v = std::int32_t{x[i]} << p.ptf_shift[static_cast<std::size_t>(i)];
    mm = std::max(mm, static_cast<std::uint32_t>(v < 0 ? -v : v));
    s1 += v;
    s2 += std::int64_t{v} * v;
  }
  const std::int32_t shift = layernorm_row_shift<std::int8_t>(static_cast<int>(std::bit_width(mm)));
  s1 <<= shift;
  s2 <<= 2 * shift;
  return layernorm_row(s1, s2, c, shift, kLayerNormRowBits<std::int8_t>, p.eps_q32);
}

// The output stage (n = ⌊(a·R + 2^14)/2^15⌋, then layernorm_out) of channels [0, full), full a
// multiple of 16, given a_of(i): a of the 16 channels from i. Two vectors share one pack and one
// 32-byte store. The parameters are read through local pointers: y is a char type, so stores
// through it could alias the vectors' data pointers and would force a reload per channel block.
template <class AOf>
inline void layernorm_out_rows16(const LayerNormParams& p, std::int32_t row_recip, Index full,
                                 std::int8_t* y, AOf&& a_of) noexcept {
  const std::int16_t* gain = p.gain.data();
  const std::int16_t* bias = p.bias.data();
  const __m256i recip = _mm256_set1_epi16(static_cast<std::int16_t>(row_recip));
  const __m128i frac = _mm_cvtsi32_si128(p.frac_bits);
  auto h_at = [&](Index i) {
    const __m256i n = _mm256_mulhrs_epi16(a_of(i), recip);
    const __m256i g = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(gain + i));
    const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bias + i));
    return _mm256_sra_epi16(_mm256_adds_epi16(_mm256_mulhrs_epi16(n, g), b), frac);
  };
  Index i = 0;
  for (; i + 32 <= full; i += 32) {
    const __m256i packed = _mm256_packs_epi16(h_at(i), h_at(i + 16));  // lanes 0 2 1 3
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(y + i), _mm256_permute4x64_epi64(packed, 0xd8));
  }
  if (i < full) {
    const __m256i h = h_at(i);
    const __m128i o = _mm_packs_epi16(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(y + i), o);
  }
}

// The scalar definition for channels [from, C).
template <class In>
inline void layernorm_apply_tail(const LayerNormParams& p, const LayerNormRow& row, const In* x,
                                 std::int8_t* y, Index from) noexcept {
  for (Index i = from; i < p.channels; ++i) {
    const auto ch = static_cast<std::size_t>(i);
    const std::int32_t n = layernorm_n(row, shift_signed(x[i], p.ptf_shift[ch] + row.shift));
    y[i] = layernorm_out(n, p.gain[ch], p.bias[ch], p.frac_bits);
  }
}

// Normalizes one int8 row with its statistics.
inline void layernorm_apply_int8_16(const LayerNormParams& p, const LayerNormRow& row,
                                    const std::int8_t* x, std::int8_t* y) noexcept {
  const Index c = p.channels;
  const Index full = c - c % 16;
  const __m128i vshift = _mm_cvtsi32_si128(row.shift);
  const __m256i mean = _mm256_set1_epi16(static_cast<std::int16_t>(row.mean));
  const __m128i up = _mm_cvtsi32_si128(row.up), down = _mm_cvtsi32_si128(row.down);
  const std::int16_t* scale = p.ptf_scale.data();
  layernorm_out_rows16(p, row.recip, full, y, [&](Index i) {
    const __m256i scaled =
        _mm256_sll_epi16(layernorm_int8_prescaled(scale, x, i), vshift);  // < 2^13
    return _mm256_sra_epi16(_mm256_sll_epi16(_mm256_sub_epi16(scaled, mean), up), down);
  });
  layernorm_apply_tail(p, row, x, y, full);
}

// int16 rows with |x'| = |x·2^α| < 2^14 on 16-bit lanes (every residual-stream row of the
// engine: its codes are 8-bit, |x'| <= 255·8). Then λ = 24 − bitlen(max|x'|) >= 11 and
// x̃ = x'·2^λ, so the sums are 2^λ·Σx' and 4^λ·Σx'² (vpmaddwd: x'² < 2^28, eight pair sums
// < 2^32 per uint32 lane before they move to 64 bits), and a = ⌊(x̃ − m)·2^up / 2^down⌋ (|a| <
// 2^15) follows from x' − ⌊m/2^λ⌋ in 16 bits (layernorm_apply_i16_16). Returns false, leaving
// `row` alone, when a vector channel has a larger |x'|: the 32-bit lanes must sum it. (The
// scalar tail sums exactly anyway; a large value there only makes λ < 10, and the row is then
// normalized on 32-bit lanes.)
inline bool layernorm_row_i16_16(const LayerNormParams& p, const std::int16_t* x,
                                 LayerNormRow& row) noexcept {
  const Index c = p.channels;
  const Index full = c - c % 16;
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i vmax = _mm256_setzero_si256(), wide = _mm256_setzero_si256();
  __m256i a1 = _mm256_setzero_si256(), a2 = _mm256_setzero_si256(), s2w = _mm256_setzero_si256();
  auto flush_squares = [&] {
    s2w = _mm256_add_epi64(s2w, _mm256_cvtepu32_epi64(_mm256_castsi256_si128(a2)));
    s2w = _mm256_add_epi64(s2w, _mm256_cvtepu32_epi64(_mm256_extracti128_si256(a2, 1)));
    a2 = _mm256_setzero_si256();
  };
  int in_a2 = 0;
  for (Index i = 0; i < full; i += 16) {
    const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i));
    const __m256i sc = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p.ptf_scale.data() + i));
    // ⌊|x|·2^(α+2) / 2^16⌋ > 0 exactly when |x'| >= 2^14 (|−32768| reads as 2^15).
    wide =
        _mm256_or_si256(wide, _mm256_mulhi_epu16(_mm256_abs_epi16(xv), _mm256_slli_epi16(sc, 2)));
    const __m256i v = _mm256_mullo_epi16(xv, sc);
    vmax = _mm256_max_epi16(vmax, _mm256_abs_epi16(v));
    a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(v, ones));  // < 2^15 per step
    a2 = _mm256_add_epi32(a2, _mm256_madd_epi16(v, v));
    if (++in_a2 == 8) {
      flush_squares();
      in_a2 = 0;
    }
  }
  if (!_mm256_testz_si256(wide, wide)) return false;
  flush_squares();
  std::int64_t s1 = Ops::reduce_add(a1);
  const __m128i t = _mm_add_epi64(_mm256_castsi256_si128(s2w), _mm256_extracti128_si256(s2w, 1));
  std::int64_t s2 = _mm_cvtsi128_si64(t) + _mm_extract_epi64(t, 1);
  std::uint32_t mm = static_cast<std::uint32_t>(
      Ops::reduce_max(_mm256_max_epi32(_mm256_cvtepi16_epi32(_mm256_castsi256_si128(vmax)),
                                       _mm256_cvtepi16_epi32(_mm256_extracti128_si256(vmax, 1)))));
  for (Index i = full; i < c; ++i) {
    const std::int32_t v = std::int32_t{x[i]} << p.ptf_shift[static_cast<std::size_t>(i)];
    mm = std::max(mm, static_cast<std::uint32_t>(v < 0 ? -v : v));
    s1 += v;
    s2 += std::int64_t{v} * v;
  }
  row = i16_row(p, s1, s2, mm);
  return true;
}

// Normalizes one int16 row with row.shift >= kI16NarrowShift (the constants: i16_narrow).
inline void layernorm_apply_i16_16(const LayerNormParams& p, const LayerNormRow& row,
                                   const std::int16_t* x, std::int8_t* y) noexcept {
  const Index c = p.channels;
  const Index full = c - c % 16;
  const I16Narrow n = i16_narrow(row);
  const __m256i vc1 = _mm256_set1_epi16(n.c1), vc2 = _mm256_set1_epi16(n.c2);
  const __m128i vsl = _mm_cvtsi32_si128(n.sl), vsr = _mm_cvtsi32_si128(n.sr);
  const std::int16_t* scale = p.ptf_scale.data();
  layernorm_out_rows16(p, row.recip, full, y, [&](Index i) {
    const __m256i v =
        _mm256_mullo_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i)),
                           _mm256_loadu_si256(reinterpret_cast<const __m256i*>(scale + i)));
    return _mm256_sub_epi16(_mm256_sra_epi16(_mm256_sll_epi16(_mm256_sub_epi16(v, vc1), vsl), vsr),
                            vc2);
  });
  layernorm_apply_tail(p, row, x, y, full);
}

#include "vitcompress/kernels/detail/layernorm_int_rows16.inc"

}  // namespace vitc::kernels::detail::nl_avx2
VITC_NL_END

VITC_NL_BEGIN_AVX512
namespace vitc::kernels::detail::nl_avx512 {
#include "vitcompress/kernels/detail/layernorm_int_body.inc"

// x' = x·2^α for 32 channels from i (|x'| <= 1024); lanes outside k are 0.
inline __m512i layernorm_int8_prescaled(const LayerNormParams& p, const std::int8_t* x, Index i,
                                        __mmask32 k) noexcept {
  return _mm512_mullo_epi16(_mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(k, x + i)),
                            _mm512_maskz_loadu_epi16(k, p.ptf_scale.data() + i));
}

// The row statistics of one int8 row.
inline LayerNormRow layernorm_row_int8_16(const LayerNormParams& p, const std::int8_t* x) noexcept {
  const Index c = p.channels;
  // One pass: x' = x·2^α (|x'| <= 1024), its maximum magnitude and the sums of x' and x'²; with
  // λ >= 3, Σx̃ = 2^λ·Σx' and Σx̃² = 4^λ·Σx'² exactly.
  auto prescaled = [&](Index i, __mmask32 k) { return layernorm_int8_prescaled(p, x, i, k); };
  const __m512i ones = _mm512_set1_epi16(1);
  __m512i vmax = _mm512_setzero_si512();
  std::int64_t s1 = 0, s2 = 0;
  constexpr Index kBlock = 512 * 32;  // a lane gains <= 2^21 per step
  for (Index b = 0; b < c; b += kBlock) {
    __m512i a1 = _mm512_setzero_si512(), a2 = _mm512_setzero_si512();
    const Index end = std::min(c, b + kBlock);
    for (Index i = b; i < end; i += 32) {
      const __m512i v = prescaled(i, tail_mask32(end - i));
      vmax = _mm512_max_epi16(vmax, _mm512_abs_epi16(v));
      a1 = _mm512_add_epi32(a1, _mm512_madd_epi16(v, ones));
      a2 = _mm512_add_epi32(a2, _mm512_madd_epi16(v, v));
    }
    s1 += Ops::reduce_add(a1);
    s2 += Ops::reduce_add(a2);
  }
  const std::uint32_t mm = static_cast<std::uint32_t>(_mm512_reduce_max_epi32(
      _mm512_max_epi32(_mm512_cvtepi16_epi32(_mm512_castsi512_si256(vmax)),
                       _mm512_cvtepi16_epi32(_mm512_extracti64x4_epi64(vmax, 1)))));
  const std::int32_t shift = layernorm_row_shift<std::int8_t>(static_cast<int>(std::bit_width(mm)));
  s1 <<= shift;
  s2 <<= 2 * shift;
  return layernorm_row(s1, s2, c, shift, kLayerNormRowBits<std::int8_t>, p.eps_q32);
}

// The output stage (n = ⌊(a·R + 2^14)/2^15⌋, then layernorm_out) of channels [0, C), given
// a_of(i, k): a of the 32 channels from i (lanes outside k unused). Two vectors share one pack
// and one 64-byte store; the last 1–63 channels go through masked stores. The parameters are
// read through local pointers, as on AVX2 (y is a char type and could alias them).
template <class AOf>
inline void layernorm_out_rows32(const LayerNormParams& p, std::int32_t row_recip, std::int8_t* y,
                                 AOf&& a_of) noexcept {
  const Index c = p.channels;
  const std::int16_t* gain = p.gain.data();
  const std::int16_t* bias = p.bias.data();
  const __m512i recip = _mm512_set1_epi16(static_cast<std::int16_t>(row_recip));
  const __m128i frac = _mm_cvtsi32_si128(p.frac_bits);
  auto h_at = [&](Index i, __mmask32 k) {
    const __m512i n = _mm512_mulhrs_epi16(a_of(i, k), recip);
    const __m512i g = _mm512_maskz_loadu_epi16(k, gain + i);
    const __m512i b = _mm512_maskz_loadu_epi16(k, bias + i);
    return _mm512_sra_epi16(_mm512_adds_epi16(_mm512_mulhrs_epi16(n, g), b), frac);
  };
  const __m512i order = _mm512_set_epi64(7, 5, 3, 1, 6, 4, 2, 0);  // packs interleaves by 128
  const __mmask32 all = ~__mmask32{0};
  Index i = 0;
  for (; i + 64 <= c; i += 64) {
    const __m512i packed = _mm512_packs_epi16(h_at(i, all), h_at(i + 32, all));
    _mm512_storeu_si512(y + i, _mm512_permutexvar_epi64(order, packed));
  }
  for (; i < c; i += 32) {
    const __mmask32 k = tail_mask32(c - i);
    _mm256_mask_storeu_epi8(y + i, k, _mm512_cvtsepi16_epi8(h_at(i, k)));
  }
}

// Normalizes one int8 row with its statistics.
inline void layernorm_apply_int8_16(const LayerNormParams& p, const LayerNormRow& row,
                                    const std::int8_t* x, std::int8_t* y) noexcept {
  const __m128i vshift = _mm_cvtsi32_si128(row.shift);
  const __m512i mean = _mm512_set1_epi16(static_cast<std::int16_t>(row.mean));
  const __m128i up = _mm_cvtsi32_si128(row.up), down = _mm_cvtsi32_si128(row.down);
  layernorm_out_rows32(p, row.recip, y, [&](Index i, __mmask32 k) {
    const __m512i scaled = _mm512_sll_epi16(layernorm_int8_prescaled(p, x, i, k), vshift);
    return _mm512_sra_epi16(_mm512_sll_epi16(_mm512_sub_epi16(scaled, mean), up), down);
  });
}

// int16 rows with |x'| = |x·2^α| < 2^14 on 16-bit lanes, as nl_avx2::layernorm_row_i16_16 (the
// derivation is there), 32 lanes at a time and with masked tails instead of a scalar one: every
// channel is in the check, so false means some |x'| >= 2^14 and the 32-bit lanes sum the row.
inline bool layernorm_row_i16_16(const LayerNormParams& p, const std::int16_t* x,
                                 LayerNormRow& row) noexcept {
  const Index c = p.channels;
  const std::int16_t* scale = p.ptf_scale.data();
  const __m512i ones = _mm512_set1_epi16(1);
  __m512i vmax = _mm512_setzero_si512(), wide = _mm512_setzero_si512();
  __m512i a1 = _mm512_setzero_si512(), a2 = _mm512_setzero_si512(), s2w = _mm512_setzero_si512();
  auto flush_squares = [&] {
    s2w = _mm512_add_epi64(s2w, _mm512_cvtepu32_epi64(_mm512_castsi512_si256(a2)));
    s2w = _mm512_add_epi64(s2w, _mm512_cvtepu32_epi64(_mm512_extracti64x4_epi64(a2, 1)));
    a2 = _mm512_setzero_si512();
  };
  int in_a2 = 0;
  for (Index i = 0; i < c; i += 32) {
    const __mmask32 k = tail_mask32(c - i);
    const __m512i xv = _mm512_maskz_loadu_epi16(k, x + i);
    const __m512i sc = _mm512_maskz_loadu_epi16(k, scale + i);
    // ⌊|x|·2^(α+2) / 2^16⌋ > 0 exactly when |x'| >= 2^14 (|−32768| reads as 2^15).
    wide =
        _mm512_or_si512(wide, _mm512_mulhi_epu16(_mm512_abs_epi16(xv), _mm512_slli_epi16(sc, 2)));
    const __m512i v = _mm512_mullo_epi16(xv, sc);
    vmax = _mm512_max_epi16(vmax, _mm512_abs_epi16(v));
    a1 = _mm512_add_epi32(a1, _mm512_madd_epi16(v, ones));  // < 2^15 per step
    a2 = _mm512_add_epi32(a2, _mm512_madd_epi16(v, v));     // < 2^29 per step
    if (++in_a2 == 8) {
      flush_squares();
      in_a2 = 0;
    }
  }
  if (_mm512_test_epi16_mask(wide, wide) != 0) return false;
  flush_squares();
  const std::int64_t s1 = Ops::reduce_add(a1);
  const std::int64_t s2 = _mm512_reduce_add_epi64(s2w);
  const std::uint32_t mm = static_cast<std::uint32_t>(_mm512_reduce_max_epi32(
      _mm512_max_epi32(_mm512_cvtepi16_epi32(_mm512_castsi512_si256(vmax)),
                       _mm512_cvtepi16_epi32(_mm512_extracti64x4_epi64(vmax, 1)))));
  row = i16_row(p, s1, s2, mm);
  return true;
}

// Normalizes one int16 row with row.shift >= kI16NarrowShift (the constants as in
// nl_avx2::layernorm_apply_i16_16).
inline void layernorm_apply_i16_16(const LayerNormParams& p, const LayerNormRow& row,
                                   const std::int16_t* x, std::int8_t* y) noexcept {
  const I16Narrow n = i16_narrow(row);
  const __m512i vc1 = _mm512_set1_epi16(n.c1), vc2 = _mm512_set1_epi16(n.c2);
  const __m128i vsl = _mm_cvtsi32_si128(n.sl), vsr = _mm_cvtsi32_si128(n.sr);
  const std::int16_t* scale = p.ptf_scale.data();
  layernorm_out_rows32(p, row.recip, y, [&](Index i, __mmask32 k) {
    const __m512i v = _mm512_mullo_epi16(_mm512_maskz_loadu_epi16(k, x + i),
                                         _mm512_maskz_loadu_epi16(k, scale + i));
    return _mm512_sub_epi16(_mm512_sra_epi16(_mm512_sll_epi16(_mm512_sub_epi16(v, vc1), vsl), vsr),
                            vc2);
  });
}

#include "vitcompress/kernels/detail/layernorm_int_rows16.inc"

}  // namespace vitc::kernels::detail::nl_avx512
VITC_NL_END

#endif  // VITC_HAVE_X86_TARGET_KERNELS

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

namespace vitc::kernels::detail {

template <class Tag, class In>
void layernorm_rows_simd(Tag, const LayerNormParams& params, const In* x, Index x_stride,
                         std::int8_t* y, Index y_stride, Index rows) {
  if constexpr (arch::kIsXsimd<Tag>) {
    nl_xsimd::layernorm_rows_body<XsimdOps<typename Tag::xsimd_arch>>(params, x, x_stride, y,
                                                                      y_stride, rows);
#if VITC_HAVE_X86_TARGET_KERNELS
  } else if constexpr (std::is_same_v<Tag, arch::Avx2>) {
    nl_avx2::layernorm_rows_x86(params, x, x_stride, y, y_stride, rows);
  } else if constexpr (std::is_same_v<Tag, arch::Avx512Vnni>) {
    nl_avx512::layernorm_rows_x86(params, x, x_stride, y, y_stride, rows);
#endif
  } else {
    static_assert(arch::kIsXsimd<Tag>, "layernorm_int: no SIMD path for this arch tag");
  }
}

}  // namespace vitc::kernels::detail
