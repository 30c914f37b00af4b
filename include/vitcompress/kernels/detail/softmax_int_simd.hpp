// SPDX-License-Identifier: Apache-2.0
#pragma once
// Int-2^n-Softmax SIMD paths: the 32-bit-lane body (detail/softmax_int_body.inc) compiled for
// xsimd and AVX2, an AVX-512BW path for int8 scores with LinearProb output that reads E (< 2^15)
// from the 256-entry table SoftmaxParams::int8_exp (vpermi2w) on 16-bit lanes, and for every other
// AVX-512 case the same 32-bit-lane formulas with masked tails (softmax_row_masked).

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <type_traits>

#include "vitcompress/core/tensor.hpp"
#include "vitcompress/kernels/arch.hpp"
#include "vitcompress/kernels/detail/nonlinear_int_ops.hpp"
#include "vitcompress/kernels/detail/softmax_int_scalar.hpp"
#include "vitcompress/kernels/detail/softmax_int_types.hpp"

// GCC 12 reports its own _mm512_undefined_*() placeholders inside AVX-512 intrinsics as
// uninitialized once they are inlined (GCC bug 105593); the values are never read.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

namespace vitc::kernels::detail::nl_xsimd {
#include "vitcompress/kernels/detail/softmax_int_body.inc"
}  // namespace vitc::kernels::detail::nl_xsimd

#if VITC_HAVE_X86_TARGET_KERNELS

VITC_NL_BEGIN_AVX2
namespace vitc::kernels::detail::nl_avx2 {
#include "vitcompress/kernels/detail/softmax_int_body.inc"
}  // namespace vitc::kernels::detail::nl_avx2
VITC_NL_END

VITC_NL_BEGIN_AVX512
namespace vitc::kernels::detail::nl_avx512 {
#include "vitcompress/kernels/detail/softmax_int_body.inc"

// 256 uint16 entries in 8 registers; lookup of 32 indices (16-bit lanes, 0..255).
struct Table256 {
  __m512i t[8];
};

// From 256 int32 values that fit in 16 bits.
[[nodiscard]] inline Table256 load_table256(const std::int32_t* lut) noexcept {
  Table256 tab;
  for (int k = 0; k < 8; ++k) {
    const __m256i lo = _mm512_cvtepi32_epi16(_mm512_loadu_si512(lut + 32 * k));
    const __m256i hi = _mm512_cvtepi32_epi16(_mm512_loadu_si512(lut + 32 * k + 16));
    tab.t[k] = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
  }
  return tab;
}

[[nodiscard]] inline __m512i lookup256(const Table256& tab, __m512i idx) noexcept {
  const __m512i r0 = _mm512_permutex2var_epi16(tab.t[0], idx, tab.t[1]);  // idx bits 0..5
  const __m512i r1 = _mm512_permutex2var_epi16(tab.t[2], idx, tab.t[3]);
  const __m512i r2 = _mm512_permutex2var_epi16(tab.t[4], idx, tab.t[5]);
  const __m512i r3 = _mm512_permutex2var_epi16(tab.t[6], idx, tab.t[7]);
  const __mmask32 b6 = _mm512_test_epi16_mask(idx, _mm512_set1_epi16(64));
  const __mmask32 b7 = _mm512_test_epi16_mask(idx, _mm512_set1_epi16(128));
  return _mm512_mask_blend_epi16(b7, _mm512_mask_blend_epi16(b6, r0, r1),
                                 _mm512_mask_blend_epi16(b6, r2, r3));
}

[[nodiscard]] inline std::int32_t reduce_max_epi8(__m512i v) noexcept {
  __m256i a = _mm256_max_epi8(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1));
  __m128i b = _mm_max_epi8(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1));
  b = _mm_max_epi8(b, _mm_srli_si128(b, 8));
  b = _mm_max_epi8(b, _mm_srli_si128(b, 4));
  b = _mm_max_epi8(b, _mm_srli_si128(b, 2));
  b = _mm_max_epi8(b, _mm_srli_si128(b, 1));
  return static_cast<std::int8_t>(_mm_cvtsi128_si32(b) & 0xFF);
}

[[nodiscard]] inline __mmask32 tail_mask32(Index n) noexcept {
  return n >= 32 ? ~__mmask32{0} : static_cast<__mmask32>((std::uint32_t{1} << n) - 1);
}

// E of 32 int8 scores at p (n <= 32 valid; the others give E = 0).
[[nodiscard]] inline __m512i int8_exp32(const Table256& tab, __m512i vm, const std::int8_t* p,
                                        Index n) noexcept {
  const __mmask32 k = tail_mask32(n);
  const __m512i x = _mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(k, p));
  return _mm512_maskz_mov_epi16(k, lookup256(tab, _mm512_sub_epi16(vm, x)));
}

template <class Exp>
// `scratch` (cols uint16, or null when the row is longer than the caller's buffer) keeps E
// between the two passes; without it the second pass looks E up again.
inline void softmax_row_int8_table(const SoftmaxParams<Exp, LinearProb>& params,
                                   const Table256& tab, const std::int8_t* x, std::uint8_t* y,
                                   Index cols, std::uint16_t* scratch) noexcept {
  __m512i vmax = _mm512_set1_epi8(-128);
  Index i = 0;
  for (; i + 64 <= cols; i += 64) vmax = _mm512_max_epi8(vmax, _mm512_loadu_si512(x + i));
  if (i < cols) {
    const __mmask64 k = _bzhi_u64(~std::uint64_t{0}, static_cast<unsigned>(cols - i));
    vmax = _mm512_max_epi8(vmax, _mm512_mask_loadu_epi8(_mm512_set1_epi8(-128), k, x + i));
  }
  const __m512i vm = _mm512_set1_epi16(static_cast<std::int16_t>(reduce_max_epi8(vmax)));
  const __m512i ones = _mm512_set1_epi16(1);

  std::int64_t total = 0;
  __m512i acc = _mm512_setzero_si512();  // pairs of E: < 2^16 per lane per step
  Index in_acc = 0;
  for (i = 0; i < cols; i += 32) {
    const __m512i e = int8_exp32(tab, vm, x + i, cols - i);
    if (scratch) _mm512_mask_storeu_epi16(scratch + i, tail_mask32(cols - i), e);
    acc = _mm512_add_epi32(acc, _mm512_madd_epi16(e, ones));
    if (++in_acc == (Index{1} << 15)) {
      total += Ops::reduce_add(acc);
      acc = _mm512_setzero_si512();
      in_acc = 0;
    }
  }
  total += Ops::reduce_add(acc);

  const LinearNorm n = linear_norm(total, params.out_bits);
  if (n.shift >= 17) {
    std::fill(y, y + cols, std::uint8_t{0});
    return;
  }
  const __m512i f = _mm512_set1_epi16(static_cast<std::int16_t>(n.factor));
  const __m512i half = _mm512_set1_epi16(static_cast<std::int16_t>(1 << (n.shift - 1)));
  const __m128i sh = _mm_cvtsi32_si128(n.shift);
  for (i = 0; i < cols; i += 32) {
    const __mmask32 k = tail_mask32(cols - i);
    const __m512i e =
        scratch ? _mm512_maskz_loadu_epi16(k, scratch + i) : int8_exp32(tab, vm, x + i, cols - i);
    const __m512i hi = _mm512_mulhi_epu16(e, f);  // ⌊E·f / 2^16⌋ < 2^15
    const __m512i o = _mm512_srl_epi16(_mm512_add_epi16(hi, half), sh);
    _mm256_mask_storeu_epi8(y + i, k, _mm512_cvtepi16_epi8(o));
  }
}

template <class Exp>
inline void softmax_rows_int8_table(const SoftmaxParams<Exp, LinearProb>& params,
                                    const std::int8_t* x, Index x_stride, std::uint8_t* y,
                                    Index y_stride, Index rows, Index cols) noexcept {
  constexpr Index kScratch = 4096;
  alignas(64) std::uint16_t scratch[kScratch];
  const Table256 tab = load_table256(params.int8_exp.data());
  for (Index r = 0; r < rows; ++r)
    softmax_row_int8_table(params, tab, x + r * x_stride, y + r * y_stride, cols,
                           cols <= kScratch ? scratch : nullptr);
}

// Every other AVX-512 case (int32 scores, and int8 scores with Log2Prob): the 32-bit-lane body
// with masked tails instead of scalar ones, and for LinearProb the exponentials kept as uint16
// (E < 2^15) so that the output pass runs on 32 lanes with vpmulhuw, as the int8 table path.
[[nodiscard]] inline __mmask16 tail_mask16(Index n) noexcept {
  return n >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << n) - 1);
}

// 16 scores as int32 lanes; lanes outside k hold `fill`.
template <class In>
[[nodiscard]] inline __m512i load_scores16(const In* p, __mmask16 k, std::int32_t fill) noexcept {
  if constexpr (std::is_same_v<In, std::int32_t>)
    return _mm512_mask_loadu_epi32(_mm512_set1_epi32(fill), k, p);
  else
    return _mm512_mask_blend_epi32(k, _mm512_set1_epi32(fill),
                                   _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(k, p)));
}

template <class Exp, class Out, class In>
inline void softmax_row_masked(const SoftmaxParams<Exp, Out>& params, const ExpVec<Ops>& ev,
                               const In* x, std::uint8_t* y, Index cols,
                               std::int32_t* scratch) noexcept {
  constexpr bool kLinear = std::is_same_v<Out, LinearProb>;
  constexpr std::int32_t kLowest = std::numeric_limits<std::int32_t>::min();
  __m512i vmax = _mm512_set1_epi32(kLowest);
  for (Index i = 0; i < cols; i += 16)
    vmax = _mm512_max_epi32(vmax, load_scores16(x + i, tail_mask16(cols - i), kLowest));
  const std::int32_t m = _mm512_reduce_max_epi32(vmax);
  const __m512i vlo = _mm512_set1_epi32(softmax_floor(m, params.exp.clamp));
  const __m512i vm = _mm512_set1_epi32(m);

  // E < 2^exp_bits: an int32 lane holds 2^(31 − exp_bits) of them.
  std::uint16_t* s16 = reinterpret_cast<std::uint16_t*>(scratch);
  std::int64_t total = 0;
  __m512i acc = _mm512_setzero_si512();
  Index in_acc = 0;
  const Index flush = Index{1} << (31 - params.exp.exp_bits);
  for (Index i = 0; i < cols; i += 16) {
    const __mmask16 k = tail_mask16(cols - i);
    const __m512i d = _mm512_sub_epi32(_mm512_max_epi32(load_scores16(x + i, k, m), vlo), vm);
    const __m512i e = _mm512_maskz_mov_epi32(k, exp_v<Ops, Exp>(ev, d));
    if constexpr (kLinear)
      _mm256_mask_storeu_epi16(s16 + i, k, _mm512_cvtepi32_epi16(e));
    else
      _mm512_mask_storeu_epi32(scratch + i, k, e);
    acc = _mm512_add_epi32(acc, e);
    if (++in_acc == flush) {
      total += Ops::reduce_add(acc);
      acc = _mm512_setzero_si512();
      in_acc = 0;
    }
  }
  total += Ops::reduce_add(acc);

  if constexpr (kLinear) {
    const LinearNorm n = linear_norm(total, params.out_bits);
    if (n.shift >= 17) {  // every ⌊E·f/2^16⌋ < 2^15 rounds to 0
      std::fill(y, y + cols, std::uint8_t{0});
      return;
    }
    const __m512i f = _mm512_set1_epi16(static_cast<std::int16_t>(n.factor));
    const __m512i half = _mm512_set1_epi16(static_cast<std::int16_t>(1 << (n.shift - 1)));
    const __m128i sh = _mm_cvtsi32_si128(n.shift);
    for (Index i = 0; i < cols; i += 32) {
      const __mmask32 k = tail_mask32(cols - i);
      const __m512i hi = _mm512_mulhi_epu16(_mm512_maskz_loadu_epi16(k, s16 + i), f);
      const __m512i o = _mm512_srl_epi16(_mm512_add_epi16(hi, half), sh);
      _mm256_mask_storeu_epi8(y + i, k, _mm512_cvtepi16_epi8(o));
    }
  } else {
    const Log2Norm n = log2_norm(total, params.out_bits);
    const __m512i zero = _mm512_setzero_si512(), levels = _mm512_set1_epi32(n.levels);
    if (n.levels <= 16) {
      // As the body: binary search for the largest j < levels with E <= θ_j (θ decreasing),
      // then levels when E <= θ_levels.
      alignas(64) std::int32_t table[16] = {};
      for (std::int32_t j = 1; j < n.levels; ++j)
        table[j] = n.theta[static_cast<std::size_t>(j - 1)];
      const __m512i tab = _mm512_load_si512(table);
      const __m512i last = _mm512_set1_epi32(n.theta[static_cast<std::size_t>(n.levels - 1)]);
      for (Index i = 0; i < cols; i += 16) {
        const __mmask16 k = tail_mask16(cols - i);
        const __m512i e = _mm512_maskz_loadu_epi32(k, scratch + i);
        __m512i code = zero;
        for (std::int32_t step = n.levels / 2; step >= 1; step /= 2) {
          const __m512i cand = _mm512_add_epi32(code, _mm512_set1_epi32(step));
          const __mmask16 le = _mm512_cmple_epi32_mask(e, _mm512_permutexvar_epi32(cand, tab));
          code = _mm512_mask_mov_epi32(code, le, cand);
        }
        code = _mm512_mask_mov_epi32(code, _mm512_cmple_epi32_mask(e, last), levels);
        _mm_mask_storeu_epi8(y + i, k, _mm512_cvtepi32_epi8(code));
      }
    } else {
      const __m512i one = _mm512_set1_epi32(1);
      for (Index i = 0; i < cols; i += 16) {
        const __mmask16 k = tail_mask16(cols - i);
        const __m512i e = _mm512_maskz_loadu_epi32(k, scratch + i);
        __m512i code = zero;
        for (std::int32_t j = 0; j < n.count; ++j)  // E <= θ_j
          code = _mm512_mask_add_epi32(
              code,
              _mm512_cmple_epi32_mask(e, _mm512_set1_epi32(n.theta[static_cast<std::size_t>(j)])),
              code, one);
        code = _mm512_mask_mov_epi32(code, _mm512_cmpeq_epi32_mask(e, zero), levels);
        _mm_mask_storeu_epi8(y + i, k, _mm512_cvtepi32_epi8(code));
      }
    }
  }
}

template <class Exp, class Out, class In>
inline void softmax_rows_masked(const SoftmaxParams<Exp, Out>& params, const In* x, Index x_stride,
                                std::uint8_t* y, Index y_stride, Index rows, Index cols) {
  constexpr Index kStackCols = 4096;
  alignas(64) std::int32_t stack_scratch[kStackCols];
  std::unique_ptr<std::int32_t[]> heap_scratch;
  std::int32_t* scratch = stack_scratch;
  if (cols > kStackCols) {
    heap_scratch.reset(new std::int32_t[static_cast<std::size_t>(cols)]);
    scratch = heap_scratch.get();
  }
  const ExpVec<Ops> ev = make_exp_vec<Ops>(params.exp);
  for (Index r = 0; r < rows; ++r)
    softmax_row_masked(params, ev, x + r * x_stride, y + r * y_stride, cols, scratch);
}

}  // namespace vitc::kernels::detail::nl_avx512
VITC_NL_END

#endif  // VITC_HAVE_X86_TARGET_KERNELS

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

namespace vitc::kernels::detail {

// Rows of softmax on a SIMD path (Xsimd<A>, Avx2 or Avx512Vnni).
template <class Tag, class Exp, class Out, class In>
void softmax_rows_simd(Tag, const SoftmaxParams<Exp, Out>& params, const In* x, Index x_stride,
                       std::uint8_t* y, Index y_stride, Index rows, Index cols) {
  if constexpr (arch::kIsXsimd<Tag>) {
    nl_xsimd::softmax_rows_body<XsimdOps<typename Tag::xsimd_arch>>(params, x, x_stride, y,
                                                                    y_stride, rows, cols);
#if VITC_HAVE_X86_TARGET_KERNELS
  } else if constexpr (std::is_same_v<Tag, arch::Avx2>) {
    nl_avx2::softmax_rows_body<nl_avx2::Ops>(params, x, x_stride, y, y_stride, rows, cols);
  } else if constexpr (std::is_same_v<Tag, arch::Avx512Vnni>) {
    if constexpr (std::is_same_v<In, std::int8_t> && std::is_same_v<Out, LinearProb>)
      nl_avx512::softmax_rows_int8_table(params, x, x_stride, y, y_stride, rows, cols);
    else
      nl_avx512::softmax_rows_masked(params, x, x_stride, y, y_stride, rows, cols);
#endif
  } else {
    static_assert(arch::kIsXsimd<Tag>, "softmax_int: no SIMD path for this arch tag");
  }
}

}  // namespace vitc::kernels::detail
