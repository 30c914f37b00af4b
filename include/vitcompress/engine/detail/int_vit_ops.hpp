// SPDX-License-Identifier: Apache-2.0
#pragma once
// The integer loops of engine::IntViT that are not kernels: residual adds with requantization.
// See engine/int_vit.hpp.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "vitcompress/core/check.hpp"
#include "vitcompress/core/error.hpp"
#include "vitcompress/core/tensor.hpp"
#include "vitcompress/kernels/arch.hpp"
#include "vitcompress/kernels/fixed_point.hpp"
#include "vitcompress/quant/scheme.hpp"

#if VITC_HAVE_X86_TARGET_KERNELS
#include <immintrin.h>
#endif

namespace vitc::engine::detail {

// Whether x[0 .. n) holds no infinity and no NaN: an OR over the exponent fields (all ones only
// for those), which compilers vectorize, instead of a branch per value.
[[nodiscard]] inline bool all_finite(const float* x, Index n) noexcept {
  std::uint32_t special = 0;
  for (Index i = 0; i < n; ++i) {
    std::uint32_t bits;
    std::memcpy(&bits, x + i, sizeof bits);
    special |= (bits & 0x7f800000u) == 0x7f800000u ? 1u : 0u;
  }
  return special == 0;
}

// A sum of integer terms at different real scales, requantized into one 8-bit residual code:
//
//   v_c = ⌊(acc·a1[c] + x·a2[c] + k[c] + 2^(e[c]−1)) / 2^e[c]⌋,   out_c = clamp(v_c, lo, hi)
//
// with a1[c] = round(acc_scale[c]/S_c·2^e[c]), a2[c] = round(in_scale[c]/S_c·2^e[c]) and
// k[c] = round(bias[c]/S_c·2^e[c]) (S_c the output scale of channel c, e[c] chosen so that
// max(a1, a2) <= 2^30). So v_c = round((acc·acc_scale + x·in_scale + bias)/S_c) up to a relative
// 2^−30 in each ratio: the fake-quant simulation's float sum, rounded once. All in 64 bits:
// |acc| < 2^31 gives |acc·a1| < 2^61, |x| <= 2^11 and |k| <= 2^61 keep the sum below 2^63.
struct Rescale {
  std::vector<std::int64_t> a1, a2, k;
  std::vector<std::int32_t> e;
  std::int32_t lo = 0, hi = 0;
  // Every a1, a2 in [0, 2^31) and [lo, hi] within int16: what the AVX2 path needs (it multiplies
  // 32-bit factors and narrows with saturation). make_rescale's ratios give it unless a scale
  // ratio exceeds 2^29.
  bool avx2_exact = false;
};

[[nodiscard]] inline bool rescale_avx2_exact(const Rescale& r) noexcept {
  const auto fits = [](std::int64_t v) { return v >= 0 && v <= INT32_MAX; };
  return std::all_of(r.a1.begin(), r.a1.end(), fits) &&
         std::all_of(r.a2.begin(), r.a2.end(), fits) && r.lo >= INT16_MIN && r.hi <= INT16_MAX;
}

// One channel's fixed-point constants for the ratios r1 = acc_scale/S, r2 = in_scale/S (0 if
// absent) and the real bias b/S.
[[nodiscard]] inline Rescale make_rescale(std::span<const double> acc_scale,
                                          std::span<const double> in_scale,
                                          std::span<const double> bias,
                                          std::span<const double> out_scale, std::int32_t lo,
                                          std::int32_t hi, const std::string& what) {
  const std::size_t n = out_scale.size();
  Rescale r;
  r.a1.resize(n);
  r.a2.resize(n);
  r.k.resize(n);
  r.e.resize(n);
  r.lo = lo;
  r.hi = hi;
  for (std::size_t c = 0; c < n; ++c) {
    const double s = out_scale[c];
    const double r1 = acc_scale[c] / s, r2 = in_scale.empty() ? 0.0 : in_scale[c] / s;
    if (!(r1 > 0.0) || !std::isfinite(r1) || !std::isfinite(r2) || r2 < 0.0)
      VITC_THROW(ArgumentError(what + ": scale ratio of channel " + std::to_string(c) +
                               " is not finite and positive"));
    const double m = std::max(r1, r2);
    int e = 30 - static_cast<int>(std::ceil(std::log2(m)));
    e = std::clamp(e, 1, 62);
    const double p = std::ldexp(1.0, e);
    r.a1[c] = static_cast<std::int64_t>(std::llround(r1 * p));
    r.a2[c] = static_cast<std::int64_t>(std::llround(r2 * p));
    const double kb = bias.empty() ? 0.0 : bias[c] / s * p;
    if (!std::isfinite(kb))
      VITC_THROW(ArgumentError(what + ": bias of channel " + std::to_string(c) + " is not finite"));
    r.k[c] = static_cast<std::int64_t>(std::clamp(std::nearbyint(kb), -0x1p61, 0x1p61));
    r.e[c] = e;
  }
  r.avx2_exact = rescale_avx2_exact(r);
  return r;
}

// out[c] = clamp(round((acc[c]·a1 + x[c]·a2 + k) / 2^e)) for one row, or with extra[c] in place
// of the x term; x and extra may be null (x may equal out). Channels c0..n−1 (the SIMD paths'
// tails), every pointer indexed from channel 0.
inline void rescale_row(const Rescale& r, const std::int32_t* acc, const std::int16_t* x,
                        const std::int64_t* extra, std::int16_t* out, Index n,
                        Index c0 = 0) noexcept {
  const std::int64_t* a1 = r.a1.data();
  const std::int64_t* a2 = r.a2.data();
  const std::int64_t* k = r.k.data();
  const std::int32_t* e = r.e.data();
  const std::int64_t lo = r.lo, hi = r.hi;
  const auto finish = [&](Index c, std::int64_t num) {
    const std::int64_t v = (num + (std::int64_t{1} << (e[c] - 1))) >> e[c];
    out[c] = static_cast<std::int16_t>(std::clamp(v, lo, hi));
  };
  if (x != nullptr) {
    for (Index c = c0; c < n; ++c)
      finish(c, std::int64_t{acc[c]} * a1[c] + std::int64_t{x[c]} * a2[c] + k[c]);
  } else if (extra != nullptr) {
    for (Index c = c0; c < n; ++c) finish(c, std::int64_t{acc[c]} * a1[c] + k[c] + extra[c]);
  } else {
    for (Index c = c0; c < n; ++c) finish(c, std::int64_t{acc[c]} * a1[c] + k[c]);
  }
}

#if VITC_HAVE_X86_TARGET_KERNELS
// rescale_row with the x term for `rows` rows (row i at acc + i·lda, x + i·ldx, out + i·ldo; x
// may equal out), on AVX-512: in tiles of 16 rows, blocks of 8 channels outer and the tile's rows
// inner, so that each block's constants (four int64 vectors, the rounding half folded into k)
// load once per tile, and the tile's sums stay in L1. Row by row, those loads make the loop
// load-bound (bench_vit engine/rescale/row|rows/197x192).
VITC_TARGET_AVX512VNNI inline void rescale_rows_avx512(const Rescale& r, const std::int32_t* acc,
                                                       Index lda, const std::int16_t* x, Index ldx,
                                                       std::int16_t* out, Index ldo, Index rows,
                                                       Index n) noexcept {
  constexpr Index kTile = 16;
  const __m512i lo = _mm512_set1_epi64(r.lo), hi = _mm512_set1_epi64(r.hi);
  const __m512i one = _mm512_set1_epi64(1);
  const Index vec_end = n - n % 8;
  for (Index i0 = 0; i0 < rows; i0 += kTile) {
    const Index i1 = std::min(rows, i0 + kTile);
    for (Index c = 0; c < vec_end; c += 8) {
      const __m512i a1 = _mm512_loadu_si512(r.a1.data() + c);
      const __m512i a2 = _mm512_loadu_si512(r.a2.data() + c);
      const __m512i e = _mm512_cvtepi32_epi64(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(r.e.data() + c)));
      const __m512i k = _mm512_add_epi64(_mm512_loadu_si512(r.k.data() + c),
                                         _mm512_sllv_epi64(one, _mm512_sub_epi64(e, one)));
      for (Index i = i0; i < i1; ++i) {
        const __m512i av = _mm512_cvtepi32_epi64(
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(acc + i * lda + c)));
        const __m512i xv = _mm512_cvtepi16_epi64(
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(x + i * ldx + c)));
        const __m512i num = _mm512_add_epi64(_mm512_add_epi64(_mm512_mullo_epi64(av, a1), k),
                                             _mm512_mullo_epi64(xv, a2));
        const __m512i v = _mm512_min_epi64(_mm512_max_epi64(_mm512_srav_epi64(num, e), lo), hi);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i * ldo + c), _mm512_cvtepi64_epi16(v));
      }
    }
    if (vec_end < n)
      for (Index i = i0; i < i1; ++i)
        rescale_row(r, acc + i * lda, x + i * ldx, nullptr, out + i * ldo, n, vec_end);
  }
}

// rescale_row on AVX-512, 8 channels per step in 64-bit lanes (vpmullq, vpsravq): the same exact
// integer formula, hence the same codes. With the x term, one row of rescale_rows_avx512.
VITC_TARGET_AVX512VNNI inline void rescale_row_avx512(const Rescale& r, const std::int32_t* acc,
                                                      const std::int16_t* x,
                                                      const std::int64_t* extra, std::int16_t* out,
                                                      Index n) noexcept {
  if (x != nullptr) {
    rescale_rows_avx512(r, acc, 0, x, 0, out, 0, 1, n);
    return;
  }
  const __m512i lo = _mm512_set1_epi64(r.lo), hi = _mm512_set1_epi64(r.hi);
  const __m512i one = _mm512_set1_epi64(1);
  Index c = 0;
  for (; c + 8 <= n; c += 8) {
    const __m512i av =
        _mm512_cvtepi32_epi64(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(acc + c)));
    __m512i num = _mm512_add_epi64(_mm512_mullo_epi64(av, _mm512_loadu_si512(r.a1.data() + c)),
                                   _mm512_loadu_si512(r.k.data() + c));
    if (extra != nullptr) num = _mm512_add_epi64(num, _mm512_loadu_si512(extra + c));
    const __m512i ev =
        _mm512_cvtepi32_epi64(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(r.e.data() + c)));
    const __m512i half = _mm512_sllv_epi64(one, _mm512_sub_epi64(ev, one));
    __m512i v = _mm512_srav_epi64(_mm512_add_epi64(num, half), ev);
    v = _mm512_min_epi64(_mm512_max_epi64(v, lo), hi);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + c), _mm512_cvtepi64_epi16(v));
  }
  rescale_row(r, acc, x, extra, out, n, c);
}

// rescale_row on AVX2, 4 channels per ymm of 64-bit lanes. AVX2 has no 64-bit multiply,
// arithmetic shift or min/max: vpmuldq multiplies the low 32 bits of each lane (exact when
// r.avx2_exact), the shift of t runs on t ^ s with s its sign mask (⌊t / 2^e⌋ for either sign),
// and the clamps compare and blend. The same integers as the scalar formula.
VITC_TARGET_AVX2 inline __m256i load4_i64(const std::int64_t* p) noexcept {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}

// Channels c..c+3 (c relative to the pointers) as int32, already within [lo, hi].
VITC_TARGET_AVX2 inline __m128i rescale4_avx2(const Rescale& r, const std::int32_t* acc,
                                              const std::int16_t* x, const std::int64_t* extra,
                                              Index c) noexcept {
  const __m256i one = _mm256_set1_epi64x(1);
  const __m256i av =
      _mm256_cvtepi32_epi64(_mm_loadu_si128(reinterpret_cast<const __m128i*>(acc + c)));
  __m256i num =
      _mm256_add_epi64(_mm256_mul_epi32(av, load4_i64(r.a1.data() + c)), load4_i64(r.k.data() + c));
  if (x != nullptr) {
    const __m256i xv =
        _mm256_cvtepi16_epi64(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(x + c)));
    num = _mm256_add_epi64(num, _mm256_mul_epi32(xv, load4_i64(r.a2.data() + c)));
  } else if (extra != nullptr) {
    num = _mm256_add_epi64(num, load4_i64(extra + c));
  }
  const __m256i ev =
      _mm256_cvtepi32_epi64(_mm_loadu_si128(reinterpret_cast<const __m128i*>(r.e.data() + c)));
  const __m256i t = _mm256_add_epi64(num, _mm256_sllv_epi64(one, _mm256_sub_epi64(ev, one)));
  const __m256i sign = _mm256_cmpgt_epi64(_mm256_setzero_si256(), t);
  __m256i v = _mm256_xor_si256(_mm256_srlv_epi64(_mm256_xor_si256(t, sign), ev), sign);
  const __m256i lo = _mm256_set1_epi64x(r.lo), hi = _mm256_set1_epi64x(r.hi);
  v = _mm256_blendv_epi8(v, lo, _mm256_cmpgt_epi64(lo, v));
  v = _mm256_blendv_epi8(v, hi, _mm256_cmpgt_epi64(v, hi));
  const __m256i low_dwords = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);
  return _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(v, low_dwords));
}

VITC_TARGET_AVX2 inline void rescale_row_avx2(const Rescale& r, const std::int32_t* acc,
                                              const std::int16_t* x, const std::int64_t* extra,
                                              std::int16_t* out, Index n) noexcept {
  Index c = 0;
  if (r.avx2_exact) {
    for (; c + 8 <= n; c += 8) {  // both halves are read before out (which may be x) is written
      const __m128i first = rescale4_avx2(r, acc, x, extra, c);
      const __m128i second = rescale4_avx2(r, acc, x, extra, c + 4);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + c), _mm_packs_epi32(first, second));
    }
  }
  rescale_row(r, acc, x, extra, out, n, c);
}

// out[j] = clamp(nearbyint(src[j] / scale) + zero_point, 0, 255) for j < n, each operation on
// floats as quant/scheme.hpp's asymmetric 8-bit quantizer does it (vdivps, vrndscaleps in the
// current rounding mode as nearbyint, vaddps, clamps): the same codes, 16 at a time.
VITC_TARGET_AVX512VNNI inline void quantize_u8_avx512(const float* src, float scale,
                                                      std::int32_t zero_point, std::uint8_t* out,
                                                      Index n) noexcept {
  const __m512 s = _mm512_set1_ps(scale), z = _mm512_set1_ps(static_cast<float>(zero_point));
  const __m512 lo = _mm512_setzero_ps(), hi = _mm512_set1_ps(255.0f);
  for (Index j = 0; j < n; j += 16) {
    const Index left = n - j;
    const auto mask = static_cast<__mmask16>(left >= 16 ? 0xffffu : (1u << left) - 1u);
    const __m512 q = _mm512_roundscale_ps(_mm512_div_ps(_mm512_maskz_loadu_ps(mask, src + j), s),
                                          _MM_FROUND_CUR_DIRECTION | _MM_FROUND_NO_EXC);
    const __m512 r = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(q, z), lo), hi);
    _mm_mask_storeu_epi8(out + j, mask, _mm512_cvtusepi32_epi8(_mm512_cvttps_epi32(r)));
  }
}

// quantize_u8_avx512 on 8 lanes (the same float operations in the same order: vdivps, vroundps in
// the current rounding mode, vaddps, max then min), the last n mod 8 codes by the scalar formula.
VITC_TARGET_AVX2 inline void quantize_u8_avx2(const float* src, float scale,
                                              std::int32_t zero_point, std::uint8_t* out,
                                              Index n) noexcept {
  const __m256 s = _mm256_set1_ps(scale), z = _mm256_set1_ps(static_cast<float>(zero_point));
  const __m256 lo = _mm256_setzero_ps(), hi = _mm256_set1_ps(255.0f);
  Index j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256 q =
        _mm256_round_ps(_mm256_div_ps(_mm256_loadu_ps(src + j), s), _MM_FROUND_CUR_DIRECTION);
    const __m256 r = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(q, z), lo), hi);
    const __m256i v = _mm256_cvttps_epi32(r);  // 0..255
    const __m128i w = _mm_packus_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(out + j), _mm_packus_epi16(w, w));
  }
  const quant::QuantParams qp{scale, zero_point};
  for (; j < n; ++j)
    out[j] = static_cast<std::uint8_t>(
        quant::detail::SchemeImpl<quant::SchemeKind::kAsymmetric>::quantize(src[j], qp, 8));
}

// out[c] = table[in[c]] for c < n (table indexed by signed int16, readable 3 bytes past
// table[32767]): 16 lanes per vpgatherdd, narrowed by vpmovdb.
VITC_TARGET_AVX512VNNI inline void table_lookup_avx512(const std::int8_t* table,
                                                       const std::int16_t* in, std::int8_t* out,
                                                       Index n) noexcept {
  Index c = 0;
  for (; c + 16 <= n; c += 16) {
    const __m512i idx =
        _mm512_cvtepi16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(in + c)));
    const __m512i v = _mm512_i32gather_epi32(idx, table, 1);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + c), _mm512_cvtepi32_epi8(v));
  }
  for (; c < n; ++c) out[c] = table[in[c]];
}
#endif

// Log2 attention's P operand from n kernel codes c (kernels::Log2Prob with `levels` = 2^b, b <= 4;
// c = levels is the zero): the weight w = 2^(levels − 1 − c), 0 for the zero code. w fits a byte
// for levels <= 8 (hi is then not written); for 16 levels it reaches 2^15, and w = 256·hi + lo
// with the power of two in one byte or the other. lo may be codes itself (in place).
inline void log2_weights(const std::uint8_t* codes, Index n, std::int32_t levels, std::uint8_t* hi,
                         std::uint8_t* lo) noexcept {
  const auto top = static_cast<std::uint32_t>(levels - 1);
  if (top < 8) {
    for (Index i = 0; i < n; ++i) {
      const std::uint32_t c = codes[i];
      lo[i] = static_cast<std::uint8_t>(c <= top ? 1u << (top - c) : 0u);
    }
    return;
  }
  for (Index i = 0; i < n; ++i) {
    const std::uint32_t c = codes[i];  // 0..16; weight 2^(15 − c), 0 for c = 16
    hi[i] = static_cast<std::uint8_t>(c < 8 ? 128u >> c : 0u);
    lo[i] = static_cast<std::uint8_t>(c >= 8 && c < 16 ? 128u >> (c - 8) : 0u);
  }
}

}  // namespace vitc::engine::detail
