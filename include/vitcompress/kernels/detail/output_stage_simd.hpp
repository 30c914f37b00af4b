// SPDX-License-Identifier: Apache-2.0
#pragma once
// Output pipelines on AVX-512 and AVX2 registers, equal bit for bit to the scalar stages of
// kernels/output_stage.hpp (the tests run every pipeline on every path).
//
// The general multiply_by_fixed_point (fixed_point_512/256) follows the scalar formulas lane by
// lane: vpmuldq forms the 64-bit products of the even and odd lanes, + 2^30, and bits 31..62 of the
// sum are SRDHM (only the low 32 bits are kept; the single overflow x = m = INT32_MIN is patched
// to INT32_MAX); RDBPOT and the saturating left shift follow the scalar formulas.
//
// The fast form, used for a block of columns when every shift e is in [0, 31] and no multiplier
// m is INT32_MIN (all that fixed_point_from_scale makes for scales below 1), rounds once in 64
// bits:
//
//   RDBPOT(SRDHM(x, m), e) = floor((x·m + c) / 2^(31+e)),
//   c = 2^30 + 2^31·(2^(e−1) − [x·m + 2^30 < 0])  if e >= 1,   c = 2^30  if e = 0,
//
// because SRDHM(x, m) = h = floor((x·m + 2^30) / 2^31), RDBPOT(h, e) = floor((h + 2^(e−1) − [h <
// 0]) / 2^e) for e >= 1, h < 0 exactly when x·m + 2^30 < 0, and floor(floor(a / 2^31) / 2^e) =
// floor(a / 2^(31+e)). |x·m + c| < 2^62 + 2^61 + 2^30 fits an int64, and the result fits int32.
//
// Stages are prepared once per block of 16 (or 8) columns (per-column loads, the fast form's
// constants) and then applied to every row of the tile.

#include <cstdint>
#include <tuple>
#include <type_traits>

#include "vitcompress/kernels/arch.hpp"
#include "vitcompress/kernels/detail/gemm_int8_common.hpp"
#include "vitcompress/kernels/output_stage.hpp"

#if VITC_HAVE_X86_TARGET_KERNELS
#include <immintrin.h>

namespace vitc::kernels::detail {

template <class S>
inline constexpr bool kSimdStage =
    std::is_same_v<S, OutputBiasAdd> || std::is_same_v<S, OutputRequantize> ||
    std::is_same_v<S, OutputRequantizePerChannel> || std::is_same_v<S, OutputAddZeroPoint> ||
    std::is_same_v<S, OutputClamp>;
template <class S>
inline constexpr bool kSimdLastStage =
    std::is_same_v<S, OutputSaturatingCast<std::int8_t>> ||
    std::is_same_v<S, OutputSaturatingCast<std::uint8_t>> ||
    std::is_same_v<S, OutputSaturatingCast<std::int16_t>> || std::is_same_v<S, OutputDequantize> ||
    std::is_same_v<S, OutputDequantizePerChannel>;

// Every stage has a vector form: int32 stages, then at most one final narrowing/dequantizing one.
template <class P>
struct SimdPipeline : std::false_type {};
template <>
struct SimdPipeline<std::tuple<>> : std::true_type {};
template <class... S>
struct SimdPipeline<std::tuple<S...>> {
  static constexpr std::size_t kN = sizeof...(S);
  using Last = std::tuple_element_t<kN - 1, std::tuple<S...>>;
  template <std::size_t... I>
  static constexpr bool all_int32(std::index_sequence<I...>) {
    return (kSimdStage<std::tuple_element_t<I, std::tuple<S...>>> && ...);
  }
  static constexpr bool value =
      (kSimdStage<Last> && all_int32(std::make_index_sequence<kN>{})) ||
      (kSimdLastStage<Last> && all_int32(std::make_index_sequence<kN - 1>{}));
};

// ---------------------------------------------------------------------------------- AVX-512
// GCC 12 reports the _mm512_undefined_*() pass-through operands inside its own AVX-512 intrinsics
// (srav, sllv, max, mul_epi32, cvt*) as maybe-uninitialized once they are inlined here (GCC bug
// 105593, a false positive: the values are never read). Silenced for the AVX-512 code only.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

// multiply_by_fixed_point with per-lane multiplier and shift, any values (the general form).
VITC_TARGET_AVX512VNNI VITC_ALWAYS_INLINE __m512i srdhm_512(__m512i x, __m512i m) noexcept {
  const __m512i nudge = _mm512_set1_epi64(std::int64_t{1} << 30);
  const __m512i even = _mm512_srli_epi64(_mm512_add_epi64(_mm512_mul_epi32(x, m), nudge), 31);
  const __m512i odd = _mm512_srli_epi64(
      _mm512_add_epi64(_mm512_mul_epi32(_mm512_srli_epi64(x, 32), _mm512_srli_epi64(m, 32)), nudge),
      31);
  const __m512i r = _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32));
  const __m512i min = _mm512_set1_epi32(INT32_MIN);
  const __mmask16 overflow = _mm512_cmpeq_epi32_mask(x, min) & _mm512_cmpeq_epi32_mask(m, min);
  return _mm512_mask_mov_epi32(r, overflow, _mm512_set1_epi32(INT32_MAX));
}

VITC_TARGET_AVX512VNNI VITC_ALWAYS_INLINE __m512i fixed_point_512(__m512i x, __m512i mult,
                                                                  __m512i shift) noexcept {
  const __m512i zero = _mm512_setzero_si512(), one = _mm512_set1_epi32(1);
  const __m512i left = _mm512_max_epi32(_mm512_sub_epi32(zero, shift), zero);
  const __m512i right = _mm512_max_epi32(shift, zero);
  // Saturating left shift: below INT32_MIN >> l the clamped value shifts to exactly INT32_MIN;
  // above INT32_MAX >> l the result is INT32_MAX, which no shifted value equals, so it is blended.
  const __m512i lo = _mm512_srav_epi32(_mm512_set1_epi32(INT32_MIN), left);
  const __m512i hi = _mm512_srav_epi32(_mm512_set1_epi32(INT32_MAX), left);
  const __mmask16 above = _mm512_cmpgt_epi32_mask(x, hi);
  x = _mm512_mask_mov_epi32(_mm512_sllv_epi32(_mm512_max_epi32(x, lo), left), above,
                            _mm512_set1_epi32(INT32_MAX));
  const __m512i h = srdhm_512(x, mult);
  const __m512i mask = _mm512_sub_epi32(_mm512_sllv_epi32(one, right), one);
  const __m512i rem = _mm512_and_si512(h, mask);
  const __m512i thr = _mm512_add_epi32(_mm512_srai_epi32(mask, 1), _mm512_srli_epi32(h, 31));
  const __mmask16 up = _mm512_cmpgt_epi32_mask(rem, thr);
  return _mm512_mask_add_epi32(_mm512_srav_epi32(h, right), up, _mm512_srav_epi32(h, right), one);
}

// The per-lane constants of multiply_by_fixed_point for 16 columns, prepared once per column
// block. When every lane has shift e in [0, 31] and multiplier m != INT32_MIN (all that
// fixed_point_from_scale makes for scales below 1), the two roundings fold into one 64-bit sum and
// shift (the header comment); otherwise the general form runs.
struct FixedPoint512 {
  __m512i mult, shift;     // the general form
  __m512i m_odd;           // odd lanes' multipliers in the low halves of the 64-bit lanes
  __m512i c_even, c_odd;   // 2^30 + 2^31·2^(e−1) (2^30 when e = 0), 64-bit
  __m512i s_even, s_odd;   // 31 + e, 64-bit
  __mmask8 e_even, e_odd;  // lanes with e >= 1: a negative sum takes −2^31 more
  bool fast;
};

VITC_TARGET_AVX512VNNI VITC_ALWAYS_INLINE FixedPoint512
prepare_fixed_point_512(__m512i mult, __m512i shift) noexcept {
  FixedPoint512 f;
  f.mult = mult;
  f.shift = shift;
  const __m512i zero = _mm512_setzero_si512();
  const __mmask16 general = _mm512_cmplt_epi32_mask(shift, zero) |
                            _mm512_cmpgt_epi32_mask(shift, _mm512_set1_epi32(31)) |
                            _mm512_cmpeq_epi32_mask(mult, _mm512_set1_epi32(INT32_MIN));
  f.fast = general == 0;
  const __m512i nudge = _mm512_srli_epi32(_mm512_sllv_epi32(_mm512_set1_epi32(1), shift), 1);
  const __m512i low = _mm512_set1_epi64(0xffffffff);
  const __m512i base = _mm512_set1_epi64(std::int64_t{1} << 30);
  f.m_odd = _mm512_srli_epi64(mult, 32);
  f.c_even = _mm512_add_epi64(base, _mm512_slli_epi64(_mm512_and_si512(nudge, low), 31));
  f.c_odd = _mm512_add_epi64(base, _mm512_slli_epi64(_mm512_srli_epi64(nudge, 32), 31));
  const __m512i s = _mm512_add_epi32(shift, _mm512_set1_epi32(31));
  f.s_even = _mm512_and_si512(s, low);
  f.s_odd = _mm512_srli_epi64(s, 32);
  const unsigned positive = _mm512_cmpgt_epi32_mask(shift, zero);
  f.e_even = static_cast<__mmask8>(_pext_u32(positive, 0x5555u));
  f.e_odd = static_cast<__mmask8>(_pext_u32(positive, 0xAAAAu));
  return f;
}

VITC_TARGET_AVX512VNNI VITC_ALWAYS_INLINE __m512i apply_fixed_point_512(const FixedPoint512& f,
                                                                        __m512i x) noexcept {
  if (!f.fast) return fixed_point_512(x, f.mult, f.shift);
  const __m512i below = _mm512_set1_epi64(-(std::int64_t{1} << 30));  // x·m + 2^30 < 0
  const __m512i more = _mm512_set1_epi64(-(std::int64_t{1} << 31));
  const __m512i pe = _mm512_mul_epi32(x, f.mult);
  const __m512i po = _mm512_mul_epi32(_mm512_srli_epi64(x, 32), f.m_odd);
  __m512i ye = _mm512_add_epi64(pe, f.c_even);
  __m512i yo = _mm512_add_epi64(po, f.c_odd);
  ye = _mm512_mask_add_epi64(ye, _mm512_cmplt_epi64_mask(pe, below) & f.e_even, ye, more);
  yo = _mm512_mask_add_epi64(yo, _mm512_cmplt_epi64_mask(po, below) & f.e_odd, yo, more);
  ye = _mm512_srav_epi64(ye, f.s_even);
  yo = _mm512_srav_epi64(yo, f.s_odd);
  return _mm512_mask_blend_epi32(0xAAAA, ye, _mm512_slli_epi64(yo, 32));
}

// Each stage prepared for 16 columns starting at n (lanes outside `mask` read nothing): the
// per-column loads and constant set-up happen once per column block, not once per row.
struct Prep512Add {
  __m512i add;
};
struct Prep512Clamp {
  __m512i lo, hi;
};
struct Prep512Scale {
  __m512 scale;
};
struct Prep512None {};

VITC_TARGET_AVX512VNNI VITC_ALWAYS_INLINE Prep512Add prepare_512(const OutputBiasAdd& s, Index n,
                                                                 __mmask16 mask) noexcept {
  return {_mm512_maskz_loadu_epi32(mask, s.bias.data() + n)};
}
VITC_TARGET_AVX512VNNI VITC_ALWAYS_INLINE FixedPoint512 prepare_512(const OutputRequantize& s,
                                                                    Index /*n*/,
                                                                    __mmask16 /*mask*/) noexcept {
  return prepare_fixed_point_512(_mm512_set1_epi32(s.multiplier.multiplier),
                                 _mm512_set1_epi32(s.multiplier.shift));
}
VITC_TARGET_AVX512VNNI VITC_ALWAYS_INLINE FixedPoint512
prepare_512(const OutputRequantizePerChannel& s, Index n, __mmask16 mask) noexcept {
  static_assert(sizeof(FixedPointMultiplier) == 8, "{multiplier, shift} pairs of int32");
  // Interleaved pairs: two 16-lane loads, then even/odd lanes separated.
  const auto* base = reinterpret_cast<const std::int32_t*>(s.multipliers.data() + n);
  const __mmask16 m0 =
      static_cast<__mmask16>(_pdep_u32(mask, 0x5555u) | (_pdep_u32(mask, 0x5555u) << 1));
  const __mmask16 m1 =
      static_cast<__mmask16>(_pdep_u32(mask >> 8, 0x5555u) | (_pdep_u32(mask >> 8, 0x5555u) << 1));
  const __m512i p0 = _mm512_maskz_loadu_epi32(m0, base);
  const __m512i p1 = _mm512_maskz_loadu_epi32(m1, base + 16);
  const __m512i even_idx =
      _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd_idx = _mm512_add_epi32(even_idx, _mm512_set1_epi32(1));
  return prepare_fixed_point_512(_mm512_permutex2var_epi32(p0, even_idx, p1),
                                 _mm512_permutex2var_epi32(p0, odd_idx, p1));
}
VITC_TARGET_AVX512VNNI VITC_ALWAYS_INLINE Prep512Add prepare_512(const OutputAddZeroPoint& s,
                                                                 Index /*n*/,
                                                                 __mmask16 /*mask*/) noexcept {
  return {_mm512_set1_epi32(s.zero_point)};
}
VITC_TARGET_AVX512VNNI VITC_ALWAYS_INLINE Prep512Clamp prepare_512(const OutputClamp& s,
                                                                   Index /*n*/,
                                                                   __mmask16 /*mask*/) noexcept {
  return {_mm512_set1_epi32(s.min), _mm512_set1_epi32(s.max)};
}
template <class T>
VITC_TARGET_AVX512VNNI VITC_ALWAYS_INLINE Prep512None
prepare_512(const OutputSaturatingCast<T>& /*s*/, Index /*n*/, __mmask16 /*mask*/) noexcept {
  return {};
}
VITC_TARGET_AVX512VNNI VITC_ALWAYS_INLINE Prep512Scale prepare_512(const OutputDequantize& s,
                                                                   Index /*n*/,
                                                                   __mmask16 /*mask*/) noexcept {
  return {_mm512_set1_ps(s.scale)};
}
VITC_TARGET_AVX512VNNI VITC_ALWAYS_INLINE Prep512Scale
prepare_512(const OutputDequantizePerChannel& s, Index n, __mmask16 mask) noexcept {
  return {_mm512_maskz_loadu_ps(mask, s.scales.data() + n)};
}

VITC_TARGET_AVX512VNNI VITC_ALWAYS_INLINE __m512i stage_512(const Prep512Add& s,
                                                            __m512i x) noexcept {
  return _mm512_add_epi32(x, s.add);
}
VITC_TARGET_AVX512VNNI VITC_ALWAYS_INLINE __m512i stage_512(const FixedPoint512& s,
                                                            __m512i x) noexcept {
  return apply_fixed_point_512(s, x);
}
VITC_TARGET_AVX512VNNI VITC_ALWAYS_INLINE __m512i stage_512(const Prep512Clamp& s,
                                                            __m512i x) noexcept {
  return _mm512_min_epi32(_mm512_max_epi32(x, s.lo), s.hi);
}

// The final stage: narrow or dequantize the 16 lanes and store those in `mask`.
template <class Last, class Prep, class OutT>
VITC_TARGET_AVX512VNNI VITC_ALWAYS_INLINE void store_512(const Prep& s, __m512i x, __mmask16 mask,
                                                         OutT* dst) noexcept {
  if constexpr (std::is_same_v<Last, OutputSaturatingCast<std::int8_t>>) {
    _mm_mask_storeu_epi8(dst, mask, _mm512_cvtsepi32_epi8(x));
  } else if constexpr (std::is_same_v<Last, OutputSaturatingCast<std::uint8_t>>) {
    _mm_mask_storeu_epi8(dst, mask,
                         _mm512_cvtusepi32_epi8(_mm512_max_epi32(x, _mm512_setzero_si512())));
  } else if constexpr (std::is_same_v<Last, OutputSaturatingCast<std::int16_t>>) {
    _mm256_mask_storeu_epi16(dst, mask, _mm512_cvtsepi32_epi16(x));
  } else if constexpr (std::is_same_v<Last, OutputDequantize> ||
                       std::is_same_v<Last, OutputDequantizePerChannel>) {
    _mm512_mask_storeu_ps(dst, mask, _mm512_mul_ps(_mm512_cvtepi32_ps(x), s.scale));
  } else {
    static_assert(kSimdLastStage<Last>, "store_512 handles the final narrowing stages only");
    (void)s;
  }
}

// The tile evaluators are ordinary calls (one per tile), not always-inlined: they carry target
// features, and their callers (apply_pipeline_tile_simd below, the int4 driver) are always-inline
// functions without them. Clang refuses such an inline outright; GCC refuses it whenever the
// compilation's own target lacks the features (-march=native on an AVX2-only CPU).
#define VITC_ROW_EVALUATOR_INLINE inline

// Every stage prepared, and stages I... applied (lambdas would not inherit the target attribute).
template <class... S, std::size_t... I>
VITC_TARGET_AVX512VNNI VITC_ALWAYS_INLINE auto prepare_all_512(const std::tuple<S...>& pipeline,
                                                               Index n, __mmask16 mask,
                                                               std::index_sequence<I...>) noexcept {
  return std::make_tuple(prepare_512(std::get<I>(pipeline), n, mask)...);
}
template <class Prep, std::size_t... I>
VITC_TARGET_AVX512VNNI VITC_ALWAYS_INLINE __m512i stages_512(const Prep& prep, __m512i x,
                                                             std::index_sequence<I...>) noexcept {
  ((x = stage_512(std::get<I>(prep), x)), ...);
  return x;
}

// dst[r·ldd + j] = pipeline(acc[r·lda + j]) for rows 0 .. rows − 1 and output columns
// n0 .. n0 + count − 1: 16 columns at a time, each block's stage constants prepared once.
template <class Pipeline, class OutT>
VITC_TARGET_AVX512VNNI VITC_ROW_EVALUATOR_INLINE void apply_pipeline_tile_512(
    const Pipeline& pipeline, const std::int32_t* acc, Index lda, Index rows, Index n0, Index count,
    OutT* dst, Index ldd) noexcept {
  if constexpr (!SimdPipeline<Pipeline>::value || std::tuple_size_v<Pipeline> == 0) {
    for (Index r = 0; r < rows; ++r)
      apply_pipeline_row(pipeline, acc + r * lda, n0, count, dst + r * ldd);
  } else {
    constexpr std::size_t kN = std::tuple_size_v<Pipeline>;
    using Last = std::tuple_element_t<kN - 1, Pipeline>;
    constexpr bool kNarrow = kSimdLastStage<Last>;
    for (Index j = 0; j < count; j += 16) {
      const Index left = count - j;
      const auto mask = static_cast<__mmask16>(left >= 16 ? 0xffffu : (1u << left) - 1u);
      const auto prep = prepare_all_512(pipeline, n0 + j, mask, std::make_index_sequence<kN>{});
      for (Index r = 0; r < rows; ++r) {
        __m512i x = _mm512_maskz_loadu_epi32(mask, acc + r * lda + j);
        x = stages_512(prep, x, std::make_index_sequence < kNarrow ? kN - 1 : kN > {});
        if constexpr (kNarrow)
          store_512<Last>(std::get<kN - 1>(prep), x, mask, dst + r * ldd + j);
        else
          _mm512_mask_storeu_epi32(dst + r * ldd + j, mask, x);
      }
    }
  }
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

// ---------------------------------------------------------------------------------- AVX2
VITC_TARGET_AVX2 VITC_ALWAYS_INLINE __m256i srdhm_256(__m256i x, __m256i m) noexcept {
  const __m256i nudge = _mm256_set1_epi64x(std::int64_t{1} << 30);
  const __m256i even = _mm256_srli_epi64(_mm256_add_epi64(_mm256_mul_epi32(x, m), nudge), 31);
  const __m256i odd = _mm256_srli_epi64(
      _mm256_add_epi64(_mm256_mul_epi32(_mm256_srli_epi64(x, 32), _mm256_srli_epi64(m, 32)), nudge),
      31);
  const __m256i r = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
  const __m256i min = _mm256_set1_epi32(INT32_MIN);
  const __m256i overflow = _mm256_and_si256(_mm256_cmpeq_epi32(x, min), _mm256_cmpeq_epi32(m, min));
  return _mm256_blendv_epi8(r, _mm256_set1_epi32(INT32_MAX), overflow);
}

VITC_TARGET_AVX2 VITC_ALWAYS_INLINE __m256i fixed_point_256(__m256i x, __m256i mult,
                                                            __m256i shift) noexcept {
  const __m256i zero = _mm256_setzero_si256(), one = _mm256_set1_epi32(1);
  const __m256i left = _mm256_max_epi32(_mm256_sub_epi32(zero, shift), zero);
  const __m256i right = _mm256_max_epi32(shift, zero);
  const __m256i lo = _mm256_srav_epi32(_mm256_set1_epi32(INT32_MIN), left);
  const __m256i hi = _mm256_srav_epi32(_mm256_set1_epi32(INT32_MAX), left);
  const __m256i above = _mm256_cmpgt_epi32(x, hi);  // saturates to INT32_MAX (see fixed_point_512)
  x = _mm256_blendv_epi8(_mm256_sllv_epi32(_mm256_max_epi32(x, lo), left),
                         _mm256_set1_epi32(INT32_MAX), above);
  const __m256i h = srdhm_256(x, mult);
  const __m256i mask = _mm256_sub_epi32(_mm256_sllv_epi32(one, right), one);
  const __m256i rem = _mm256_and_si256(h, mask);
  const __m256i thr = _mm256_add_epi32(_mm256_srai_epi32(mask, 1), _mm256_srli_epi32(h, 31));
  const __m256i up = _mm256_and_si256(_mm256_cmpgt_epi32(rem, thr), one);
  return _mm256_add_epi32(_mm256_srav_epi32(h, right), up);
}

// As FixedPoint512. AVX2 has no 64-bit arithmetic shift, so the sum is offset by 2^63 (folded into
// c) and shifted logically: floor((y + 2^63) / 2^s) = floor(y / 2^s) + 2^(63−s), subtracted after.
struct FixedPoint256 {
  __m256i mult, shift;
  __m256i m_odd;
  __m256i c_even, c_odd;        // 2^63 + 2^30 + 2^31·2^(e−1), 64-bit (wrapping)
  __m256i s_even, s_odd;        // 31 + e
  __m256i corr_even, corr_odd;  // 2^(32 − e)
  __m256i more_even, more_odd;  // −2^31 where e >= 1, else 0
  bool fast;
};

VITC_TARGET_AVX2 VITC_ALWAYS_INLINE FixedPoint256 prepare_fixed_point_256(__m256i mult,
                                                                          __m256i shift) noexcept {
  FixedPoint256 f;
  f.mult = mult;
  f.shift = shift;
  const __m256i zero = _mm256_setzero_si256();
  const __m256i general =
      _mm256_or_si256(_mm256_or_si256(_mm256_cmpgt_epi32(zero, shift),
                                      _mm256_cmpgt_epi32(shift, _mm256_set1_epi32(31))),
                      _mm256_cmpeq_epi32(mult, _mm256_set1_epi32(INT32_MIN)));
  f.fast = _mm256_testz_si256(general, general) != 0;
  const __m256i nudge = _mm256_srli_epi32(_mm256_sllv_epi32(_mm256_set1_epi32(1), shift), 1);
  const __m256i low = _mm256_set1_epi64x(0xffffffff);
  const __m256i base = _mm256_set1_epi64x(
      static_cast<std::int64_t>((std::uint64_t{1} << 63) + (std::uint64_t{1} << 30)));
  f.m_odd = _mm256_srli_epi64(mult, 32);
  f.c_even = _mm256_add_epi64(base, _mm256_slli_epi64(_mm256_and_si256(nudge, low), 31));
  f.c_odd = _mm256_add_epi64(base, _mm256_slli_epi64(_mm256_srli_epi64(nudge, 32), 31));
  const __m256i s = _mm256_add_epi32(shift, _mm256_set1_epi32(31));
  f.s_even = _mm256_and_si256(s, low);
  f.s_odd = _mm256_srli_epi64(s, 32);
  const __m256i one = _mm256_set1_epi64x(1), c63 = _mm256_set1_epi64x(63);
  f.corr_even = _mm256_sllv_epi64(one, _mm256_sub_epi64(c63, f.s_even));
  f.corr_odd = _mm256_sllv_epi64(one, _mm256_sub_epi64(c63, f.s_odd));
  // Each 64-bit lane takes its even (or odd) 32-bit lane's e >= 1 mask, then −2^31 under it.
  const __m256i positive = _mm256_cmpgt_epi32(shift, zero);
  const __m256i more = _mm256_set1_epi64x(-(std::int64_t{1} << 31));
  f.more_even = _mm256_and_si256(_mm256_shuffle_epi32(positive, 0xA0), more);
  f.more_odd = _mm256_and_si256(_mm256_shuffle_epi32(positive, 0xF5), more);
  return f;
}

VITC_TARGET_AVX2 VITC_ALWAYS_INLINE __m256i apply_fixed_point_256(const FixedPoint256& f,
                                                                  __m256i x) noexcept {
  if (!f.fast) return fixed_point_256(x, f.mult, f.shift);
  const __m256i below = _mm256_set1_epi64x(-(std::int64_t{1} << 30));  // x·m + 2^30 < 0
  const __m256i pe = _mm256_mul_epi32(x, f.mult);
  const __m256i po = _mm256_mul_epi32(_mm256_srli_epi64(x, 32), f.m_odd);
  __m256i ye = _mm256_add_epi64(pe, f.c_even);
  __m256i yo = _mm256_add_epi64(po, f.c_odd);
  ye = _mm256_add_epi64(ye, _mm256_and_si256(_mm256_cmpgt_epi64(below, pe), f.more_even));
  yo = _mm256_add_epi64(yo, _mm256_and_si256(_mm256_cmpgt_epi64(below, po), f.more_odd));
  ye = _mm256_sub_epi64(_mm256_srlv_epi64(ye, f.s_even), f.corr_even);
  yo = _mm256_sub_epi64(_mm256_srlv_epi64(yo, f.s_odd), f.corr_odd);
  return _mm256_blend_epi32(ye, _mm256_slli_epi64(yo, 32), 0xAA);
}

// Each stage prepared for the 8 columns starting at n (all 8 valid).
struct Prep256Add {
  __m256i add;
};
struct Prep256Clamp {
  __m256i lo, hi;
};
struct Prep256Scale {
  __m256 scale;
};
struct Prep256None {};

VITC_TARGET_AVX2 VITC_ALWAYS_INLINE Prep256Add prepare_256(const OutputBiasAdd& s,
                                                           Index n) noexcept {
  return {_mm256_loadu_si256(reinterpret_cast<const __m256i*>(s.bias.data() + n))};
}
VITC_TARGET_AVX2 VITC_ALWAYS_INLINE FixedPoint256 prepare_256(const OutputRequantize& s,
                                                              Index /*n*/) noexcept {
  return prepare_fixed_point_256(_mm256_set1_epi32(s.multiplier.multiplier),
                                 _mm256_set1_epi32(s.multiplier.shift));
}
VITC_TARGET_AVX2 VITC_ALWAYS_INLINE FixedPoint256 prepare_256(const OutputRequantizePerChannel& s,
                                                              Index n) noexcept {
  const auto* base = reinterpret_cast<const std::int32_t*>(s.multipliers.data() + n);
  const __m256i p0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(base));
  const __m256i p1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(base + 8));
  // [m0 s0 m1 s1 m2 s2 m3 s3] [m4 s4 ...] -> multipliers and shifts in column order.
  const __m256i idx = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
  const __m256i q0 = _mm256_permutevar8x32_epi32(p0, idx),
                q1 = _mm256_permutevar8x32_epi32(p1, idx);
  return prepare_fixed_point_256(_mm256_permute2x128_si256(q0, q1, 0x20),
                                 _mm256_permute2x128_si256(q0, q1, 0x31));
}
VITC_TARGET_AVX2 VITC_ALWAYS_INLINE Prep256Add prepare_256(const OutputAddZeroPoint& s,
                                                           Index /*n*/) noexcept {
  return {_mm256_set1_epi32(s.zero_point)};
}
VITC_TARGET_AVX2 VITC_ALWAYS_INLINE Prep256Clamp prepare_256(const OutputClamp& s,
                                                             Index /*n*/) noexcept {
  return {_mm256_set1_epi32(s.min), _mm256_set1_epi32(s.max)};
}
template <class T>
VITC_TARGET_AVX2 VITC_ALWAYS_INLINE Prep256None prepare_256(const OutputSaturatingCast<T>& /*s*/,
                                                            Index /*n*/) noexcept {
  return {};
}
VITC_TARGET_AVX2 VITC_ALWAYS_INLINE Prep256Scale prepare_256(const OutputDequantize& s,
                                                             Index /*n*/) noexcept {
  return {_mm256_set1_ps(s.scale)};
}
VITC_TARGET_AVX2 VITC_ALWAYS_INLINE Prep256Scale prepare_256(const OutputDequantizePerChannel& s,
                                                             Index n) noexcept {
  return {_mm256_loadu_ps(s.scales.data() + n)};
}

VITC_TARGET_AVX2 VITC_ALWAYS_INLINE __m256i stage_256(const Prep256Add& s, __m256i x) noexcept {
  return _mm256_add_epi32(x, s.add);
}
VITC_TARGET_AVX2 VITC_ALWAYS_INLINE __m256i stage_256(const FixedPoint256& s, __m256i x) noexcept {
  return apply_fixed_point_256(s, x);
}
VITC_TARGET_AVX2 VITC_ALWAYS_INLINE __m256i stage_256(const Prep256Clamp& s, __m256i x) noexcept {
  return _mm256_min_epi32(_mm256_max_epi32(x, s.lo), s.hi);
}

// The final stage on 8 lanes, stored to dst[0..8).
template <class Last, class Prep, class OutT>
VITC_TARGET_AVX2 VITC_ALWAYS_INLINE void store_256(const Prep& s, __m256i x, OutT* dst) noexcept {
  // After clamping to the target range, the saturating packs are exact; they interleave the two
  // 128-bit lanes, so dwords 0 and 4 (int8) or qwords 0 and 2 (int16) hold the 8 results.
  if constexpr (std::is_same_v<Last, OutputSaturatingCast<std::int8_t>> ||
                std::is_same_v<Last, OutputSaturatingCast<std::uint8_t>>) {
    constexpr bool kSigned = std::is_same_v<Last, OutputSaturatingCast<std::int8_t>>;
    const __m256i v = _mm256_min_epi32(_mm256_max_epi32(x, _mm256_set1_epi32(kSigned ? -128 : 0)),
                                       _mm256_set1_epi32(kSigned ? 127 : 255));
    const __m256i w = kSigned ? _mm256_packs_epi32(v, v) : _mm256_packus_epi32(v, v);
    const __m256i b = kSigned ? _mm256_packs_epi16(w, w) : _mm256_packus_epi16(w, w);
    const __m256i g = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 0, 0, 0, 0, 0, 0));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(dst), _mm256_castsi256_si128(g));
  } else if constexpr (std::is_same_v<Last, OutputSaturatingCast<std::int16_t>>) {
    const __m256i w = _mm256_packs_epi32(x, x);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst),
                     _mm256_castsi256_si128(_mm256_permute4x64_epi64(w, 0x08)));
  } else if constexpr (std::is_same_v<Last, OutputDequantize> ||
                       std::is_same_v<Last, OutputDequantizePerChannel>) {
    _mm256_storeu_ps(dst, _mm256_mul_ps(_mm256_cvtepi32_ps(x), s.scale));
  } else {
    static_assert(kSimdLastStage<Last>, "store_256 handles the final narrowing stages only");
    (void)s;
  }
}

// Every stage prepared, and stages I... applied (lambdas would not inherit the target attribute).
template <class... S, std::size_t... I>
VITC_TARGET_AVX2 VITC_ALWAYS_INLINE auto prepare_all_256(const std::tuple<S...>& pipeline, Index n,
                                                         std::index_sequence<I...>) noexcept {
  return std::make_tuple(prepare_256(std::get<I>(pipeline), n)...);
}
template <class Prep, std::size_t... I>
VITC_TARGET_AVX2 VITC_ALWAYS_INLINE __m256i stages_256(const Prep& prep, __m256i x,
                                                       std::index_sequence<I...>) noexcept {
  ((x = stage_256(std::get<I>(prep), x)), ...);
  return x;
}

// As apply_pipeline_tile_512, 8 columns at a time. Per-column arrays are read 8 at a time, so
// full vectors only; the tail uses the scalar row.
template <class Pipeline, class OutT>
VITC_TARGET_AVX2 VITC_ROW_EVALUATOR_INLINE void apply_pipeline_tile_256(
    const Pipeline& pipeline, const std::int32_t* acc, Index lda, Index rows, Index n0, Index count,
    OutT* dst, Index ldd) noexcept {
  Index j = 0;
  if constexpr (SimdPipeline<Pipeline>::value && std::tuple_size_v<Pipeline> != 0) {
    constexpr std::size_t kN = std::tuple_size_v<Pipeline>;
    using Last = std::tuple_element_t<kN - 1, Pipeline>;
    constexpr bool kNarrow = kSimdLastStage<Last>;
    for (; j + 8 <= count; j += 8) {
      const auto prep = prepare_all_256(pipeline, n0 + j, std::make_index_sequence<kN>{});
      for (Index r = 0; r < rows; ++r) {
        __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(acc + r * lda + j));
        x = stages_256(prep, x, std::make_index_sequence < kNarrow ? kN - 1 : kN > {});
        if constexpr (kNarrow)
          store_256<Last>(std::get<kN - 1>(prep), x, dst + r * ldd + j);
        else
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + r * ldd + j), x);
      }
    }
  }
  if (j < count)
    for (Index r = 0; r < rows; ++r)
      apply_pipeline_row(pipeline, acc + r * lda + j, n0 + j, count - j, dst + r * ldd + j);
}

// The tile evaluator of a given register width; callers inline it into functions whose target
// enables that width.
template <int kWidth, class Pipeline, class OutT>
VITC_ALWAYS_INLINE void apply_pipeline_tile_simd(const Pipeline& pipeline, const std::int32_t* acc,
                                                 Index lda, Index rows, Index n0, Index count,
                                                 OutT* dst, Index ldd) noexcept {
  if constexpr (kWidth == 512)
    apply_pipeline_tile_512(pipeline, acc, lda, rows, n0, count, dst, ldd);
  else
    apply_pipeline_tile_256(pipeline, acc, lda, rows, n0, count, dst, ldd);
}

}  // namespace vitc::kernels::detail

#endif  // VITC_HAVE_X86_TARGET_KERNELS
