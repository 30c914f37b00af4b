// SPDX-License-Identifier: Apache-2.0
#pragma once
// Output pipelines on AVX-512 and AVX2 registers, equal bit for bit to the scalar stages of
// kernels/output_stage.hpp (the tests run every pipeline on every path).
//
// SRDHM(x, m) = floor((x·m + 2^30) / 2^31) is computed exactly: vpmuldq forms the 64-bit
// products of the even and odd lanes, + 2^30, and bits 31..62 of the sum (a logical 64-bit shift
// by 31; only the low 32 bits are kept) are the result; the single overflow x = m = INT32_MIN is
// patched to INT32_MAX. RDBPOT and the saturating left shift follow the scalar formulas lane by
// lane. A pipeline containing a stage without a vector form falls back to the scalar row.

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

struct V512 {
  __m512i v;
  __mmask16 mask;  // valid lanes
  Index n;         // column of lane 0
};

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

// multiply_by_fixed_point with per-lane multiplier and shift.
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

VITC_TARGET_AVX512VNNI VITC_ALWAYS_INLINE void stage_512(const OutputBiasAdd& s, V512& x) noexcept {
  x.v = _mm512_add_epi32(x.v, _mm512_maskz_loadu_epi32(x.mask, s.bias.data() + x.n));
}
VITC_TARGET_AVX512VNNI VITC_ALWAYS_INLINE void stage_512(const OutputRequantize& s,
                                                         V512& x) noexcept {
  x.v = fixed_point_512(x.v, _mm512_set1_epi32(s.multiplier.multiplier),
                        _mm512_set1_epi32(s.multiplier.shift));
}
VITC_TARGET_AVX512VNNI VITC_ALWAYS_INLINE void stage_512(const OutputRequantizePerChannel& s,
                                                         V512& x) noexcept {
  static_assert(sizeof(FixedPointMultiplier) == 8, "{multiplier, shift} pairs of int32");
  // Interleaved pairs: two 16-lane loads, then even/odd lanes separated.
  const auto* base = reinterpret_cast<const std::int32_t*>(s.multipliers.data() + x.n);
  const __mmask16 m0 =
      static_cast<__mmask16>(_pdep_u32(x.mask, 0x5555u) | (_pdep_u32(x.mask, 0x5555u) << 1));
  const __mmask16 m1 = static_cast<__mmask16>(_pdep_u32(x.mask >> 8, 0x5555u) |
                                              (_pdep_u32(x.mask >> 8, 0x5555u) << 1));
  const __m512i p0 = _mm512_maskz_loadu_epi32(m0, base);
  const __m512i p1 = _mm512_maskz_loadu_epi32(m1, base + 16);
  const __m512i even_idx =
      _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd_idx = _mm512_add_epi32(even_idx, _mm512_set1_epi32(1));
  x.v = fixed_point_512(x.v, _mm512_permutex2var_epi32(p0, even_idx, p1),
                        _mm512_permutex2var_epi32(p0, odd_idx, p1));
}
VITC_TARGET_AVX512VNNI VITC_ALWAYS_INLINE void stage_512(const OutputAddZeroPoint& s,
                                                         V512& x) noexcept {
  x.v = _mm512_add_epi32(x.v, _mm512_set1_epi32(s.zero_point));
}
VITC_TARGET_AVX512VNNI VITC_ALWAYS_INLINE void stage_512(const OutputClamp& s, V512& x) noexcept {
  x.v = _mm512_min_epi32(_mm512_max_epi32(x.v, _mm512_set1_epi32(s.min)), _mm512_set1_epi32(s.max));
}

template <class OutT, class Last>
VITC_TARGET_AVX512VNNI VITC_ALWAYS_INLINE void store_512(const Last& s, const V512& x,
                                                         OutT* dst) noexcept {
  if constexpr (std::is_same_v<Last, OutputSaturatingCast<std::int8_t>>) {
    _mm_mask_storeu_epi8(dst, x.mask, _mm512_cvtsepi32_epi8(x.v));
  } else if constexpr (std::is_same_v<Last, OutputSaturatingCast<std::uint8_t>>) {
    _mm_mask_storeu_epi8(dst, x.mask,
                         _mm512_cvtusepi32_epi8(_mm512_max_epi32(x.v, _mm512_setzero_si512())));
  } else if constexpr (std::is_same_v<Last, OutputSaturatingCast<std::int16_t>>) {
    _mm256_mask_storeu_epi16(dst, x.mask, _mm512_cvtsepi32_epi16(x.v));
  } else if constexpr (std::is_same_v<Last, OutputDequantize>) {
    _mm512_mask_storeu_ps(dst, x.mask,
                          _mm512_mul_ps(_mm512_cvtepi32_ps(x.v), _mm512_set1_ps(s.scale)));
  } else if constexpr (std::is_same_v<Last, OutputDequantizePerChannel>) {
    _mm512_mask_storeu_ps(dst, x.mask,
                          _mm512_mul_ps(_mm512_cvtepi32_ps(x.v),
                                        _mm512_maskz_loadu_ps(x.mask, s.scales.data() + x.n)));
  } else {
    static_assert(kSimdLastStage<Last>, "store_512 handles the final narrowing stages only");
  }
}

template <class OutT, class... S, std::size_t... I>
VITC_TARGET_AVX512VNNI VITC_ALWAYS_INLINE void pipeline_512(const std::tuple<S...>& p, V512& x,
                                                            OutT* dst,
                                                            std::index_sequence<I...>) noexcept {
  constexpr std::size_t kN = sizeof...(S);
  using Last = std::tuple_element_t<kN - 1, std::tuple<S...>>;
  (stage_512(std::get<I>(p), x), ...);  // all but the last
  if constexpr (kSimdLastStage<Last>) {
    store_512<OutT>(std::get<kN - 1>(p), x, dst);
  } else {
    stage_512(std::get<kN - 1>(p), x);
    _mm512_mask_storeu_epi32(dst, x.mask, x.v);
  }
}

// Clang refuses to always-inline a function with target features into one without them even when
// that caller is itself always-inlined into a function that has them (apply_pipeline_row_simd
// below, the int4 driver), which GCC accepts. On Clang the row evaluators are therefore ordinary
// calls (one per tile row); on GCC they stay always-inlined.
#if defined(__clang__)
#define VITC_ROW_EVALUATOR_INLINE inline
#else
#define VITC_ROW_EVALUATOR_INLINE VITC_ALWAYS_INLINE
#endif

// dst[j] = pipeline(acc[j]) for columns n0 .. n0 + count − 1, 16 at a time.
template <class Pipeline, class OutT>
VITC_TARGET_AVX512VNNI VITC_ROW_EVALUATOR_INLINE void apply_pipeline_row_512(
    const Pipeline& pipeline, const std::int32_t* acc, Index n0, Index count, OutT* dst) noexcept {
  if constexpr (!SimdPipeline<Pipeline>::value || std::tuple_size_v<Pipeline> == 0) {
    apply_pipeline_row(pipeline, acc, n0, count, dst);
  } else {
    constexpr std::size_t kN = std::tuple_size_v<Pipeline>;
    for (Index j = 0; j < count; j += 16) {
      const Index left = count - j;
      const auto mask = static_cast<__mmask16>(left >= 16 ? 0xffffu : (1u << left) - 1u);
      V512 x{_mm512_maskz_loadu_epi32(mask, acc + j), mask, n0 + j};
      pipeline_512(pipeline, x, dst + j, std::make_index_sequence<kN - 1>{});
    }
  }
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

// ---------------------------------------------------------------------------------- AVX2
struct V256 {
  __m256i v;
  Index n;  // column of lane 0; all 8 lanes valid (the caller pads the tail)
};

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

VITC_TARGET_AVX2 VITC_ALWAYS_INLINE void stage_256(const OutputBiasAdd& s, V256& x) noexcept {
  x.v = _mm256_add_epi32(x.v,
                         _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s.bias.data() + x.n)));
}
VITC_TARGET_AVX2 VITC_ALWAYS_INLINE void stage_256(const OutputRequantize& s, V256& x) noexcept {
  x.v = fixed_point_256(x.v, _mm256_set1_epi32(s.multiplier.multiplier),
                        _mm256_set1_epi32(s.multiplier.shift));
}
VITC_TARGET_AVX2 VITC_ALWAYS_INLINE void stage_256(const OutputRequantizePerChannel& s,
                                                   V256& x) noexcept {
  const auto* base = reinterpret_cast<const std::int32_t*>(s.multipliers.data() + x.n);
  const __m256i p0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(base));
  const __m256i p1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(base + 8));
  // [m0 s0 m1 s1 m2 s2 m3 s3] [m4 s4 ...] -> multipliers and shifts in column order.
  const __m256i idx = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
  const __m256i q0 = _mm256_permutevar8x32_epi32(p0, idx),
                q1 = _mm256_permutevar8x32_epi32(p1, idx);
  x.v = fixed_point_256(x.v, _mm256_permute2x128_si256(q0, q1, 0x20),
                        _mm256_permute2x128_si256(q0, q1, 0x31));
}
VITC_TARGET_AVX2 VITC_ALWAYS_INLINE void stage_256(const OutputAddZeroPoint& s, V256& x) noexcept {
  x.v = _mm256_add_epi32(x.v, _mm256_set1_epi32(s.zero_point));
}
VITC_TARGET_AVX2 VITC_ALWAYS_INLINE void stage_256(const OutputClamp& s, V256& x) noexcept {
  x.v = _mm256_min_epi32(_mm256_max_epi32(x.v, _mm256_set1_epi32(s.min)), _mm256_set1_epi32(s.max));
}

template <class... S, std::size_t... I>
VITC_TARGET_AVX2 VITC_ALWAYS_INLINE void pipeline_256(const std::tuple<S...>& p, V256& x,
                                                      std::index_sequence<I...>) noexcept {
  (stage_256(std::get<I>(p), x), ...);
}

// The final stage on 8 lanes, stored to dst[0..8).
template <class OutT, class Last>
VITC_TARGET_AVX2 VITC_ALWAYS_INLINE void store_256(const Last& s, const V256& x,
                                                   OutT* dst) noexcept {
  // After clamping to the target range, the saturating packs are exact; they interleave the two
  // 128-bit lanes, so dwords 0 and 4 (int8) or qwords 0 and 2 (int16) hold the 8 results.
  if constexpr (std::is_same_v<Last, OutputSaturatingCast<std::int8_t>> ||
                std::is_same_v<Last, OutputSaturatingCast<std::uint8_t>>) {
    constexpr bool kSigned = std::is_same_v<Last, OutputSaturatingCast<std::int8_t>>;
    const __m256i v = _mm256_min_epi32(_mm256_max_epi32(x.v, _mm256_set1_epi32(kSigned ? -128 : 0)),
                                       _mm256_set1_epi32(kSigned ? 127 : 255));
    const __m256i w = kSigned ? _mm256_packs_epi32(v, v) : _mm256_packus_epi32(v, v);
    const __m256i b = kSigned ? _mm256_packs_epi16(w, w) : _mm256_packus_epi16(w, w);
    const __m256i g = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 0, 0, 0, 0, 0, 0));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(dst), _mm256_castsi256_si128(g));
  } else if constexpr (std::is_same_v<Last, OutputSaturatingCast<std::int16_t>>) {
    const __m256i w = _mm256_packs_epi32(x.v, x.v);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst),
                     _mm256_castsi256_si128(_mm256_permute4x64_epi64(w, 0x08)));
  } else if constexpr (std::is_same_v<Last, OutputDequantize>) {
    _mm256_storeu_ps(dst, _mm256_mul_ps(_mm256_cvtepi32_ps(x.v), _mm256_set1_ps(s.scale)));
  } else if constexpr (std::is_same_v<Last, OutputDequantizePerChannel>) {
    _mm256_storeu_ps(
        dst, _mm256_mul_ps(_mm256_cvtepi32_ps(x.v), _mm256_loadu_ps(s.scales.data() + x.n)));
  } else {
    static_assert(kSimdLastStage<Last>, "store_256 handles the final narrowing stages only");
  }
}

// dst[j] = pipeline(acc[j]), 8 columns at a time. Per-column arrays are read 8 at a time, so full
// vectors only; the tail uses the scalar row.
template <class Pipeline, class OutT>
VITC_TARGET_AVX2 VITC_ROW_EVALUATOR_INLINE void apply_pipeline_row_256(const Pipeline& pipeline,
                                                                       const std::int32_t* acc,
                                                                       Index n0, Index count,
                                                                       OutT* dst) noexcept {
  if constexpr (!SimdPipeline<Pipeline>::value || std::tuple_size_v<Pipeline> == 0) {
    apply_pipeline_row(pipeline, acc, n0, count, dst);
  } else {
    constexpr std::size_t kN = std::tuple_size_v<Pipeline>;
    using Last = std::tuple_element_t<kN - 1, Pipeline>;
    constexpr bool kNarrow = kSimdLastStage<Last>;
    Index j = 0;
    for (; j + 8 <= count; j += 8) {
      V256 x{_mm256_loadu_si256(reinterpret_cast<const __m256i*>(acc + j)), n0 + j};
      pipeline_256(pipeline, x, std::make_index_sequence < kNarrow ? kN - 1 : kN > {});
      if constexpr (kNarrow)
        store_256<OutT>(std::get<kN - 1>(pipeline), x, dst + j);
      else
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + j), x.v);
    }
    if (j < count) apply_pipeline_row(pipeline, acc + j, n0 + j, count - j, dst + j);
  }
}

// The row evaluator of a given register width; callers inline it into functions whose target
// enables that width.
template <int kWidth, class Pipeline, class OutT>
VITC_ALWAYS_INLINE void apply_pipeline_row_simd(const Pipeline& pipeline, const std::int32_t* acc,
                                                Index n0, Index count, OutT* dst) noexcept {
  if constexpr (kWidth == 512)
    apply_pipeline_row_512(pipeline, acc, n0, count, dst);
  else
    apply_pipeline_row_256(pipeline, acc, n0, count, dst);
}

}  // namespace vitc::kernels::detail

#endif  // VITC_HAVE_X86_TARGET_KERNELS
