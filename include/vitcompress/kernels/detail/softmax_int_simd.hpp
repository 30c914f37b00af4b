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
#include <cstring>
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

// Int8 scores with ShiftExp and LinearProb: the formulas of softmax_int.hpp on 16 int16 lanes
// (the 32-bit body does 8). With d ∈ [−255, 0] every intermediate fits 16 bits: u <= 383;
// q = ⌊u/D⌋ is a vpmulhuw by a 16-bit magic number (make_exp16; when none exists, e.g. D = 1,
// the 32-bit body runs); (2D − rem)·2^a <= 2·E(0) < 2^16; and the shift right by q + 1 <= 16 is a
// vpmulhuw by 2^(15−q), read from two 16-byte vpshufb tables (one byte of it is nonzero).
struct Exp16 {
  bool usable = false;
  std::uint16_t magic = 0;  // ⌊u/D⌋ = ⌊u·magic / 2^(16 + shift)⌋ for 0 <= u <= the largest u
  int shift = 0;
};

[[nodiscard]] inline Exp16 make_exp16(const IntExpParams& p) noexcept {
  // u grows as d falls (each floor in g moves one way), so the most negative d gives the largest.
  const std::int32_t d = std::max(-255, -p.clamp) >> p.pre_shift;
  const std::int32_t u_max = std::min(-(d + (d >> 1) - (d >> 4)), p.clamp_steps * p.divisor);
  Exp16 e;
  for (int s = 15; s >= 0; --s) {
    const std::uint64_t two = std::uint64_t{1} << (16 + s);
    const std::uint64_t m =
        (two + static_cast<std::uint64_t>(p.divisor) - 1) / static_cast<std::uint64_t>(p.divisor);
    if (m > 0xFFFF) continue;
    // u/D + u·err/(D·2^(16+s)) stays below the next integer when u·err < 2^(16+s).
    if (static_cast<std::uint64_t>(u_max) * (m * static_cast<std::uint64_t>(p.divisor) - two) >=
        two)
      continue;
    e.usable = true;
    e.magic = static_cast<std::uint16_t>(m);
    e.shift = s;
    return e;
  }
  return e;
}

[[nodiscard]] inline __m256i lane_index16() noexcept {
  return _mm256_setr_epi16(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
}

// The constants of shift_exp16; lo and m are set per row (set_row).
struct ShiftExp16 {
  __m256i lo, m, n_d, magic, divisor, two_d, pow_lo, pow_hi, low_byte_off, high_byte_off;
  __m128i pre_shift, magic_shift, mant_shift;
};

[[nodiscard]] inline ShiftExp16 make_shift_exp16(const IntExpParams& p, const Exp16& e16) noexcept {
  ShiftExp16 c;
  c.n_d = _mm256_set1_epi16(
      static_cast<std::int16_t>(std::min(p.clamp_steps * p.divisor, 0xFFFF)));  // unsigned
  c.magic = _mm256_set1_epi16(static_cast<std::int16_t>(e16.magic));
  c.divisor = _mm256_set1_epi16(static_cast<std::int16_t>(p.divisor));
  c.two_d = _mm256_set1_epi16(static_cast<std::int16_t>(2 * p.divisor));
  alignas(16) std::uint8_t lo[16], hi[16];
  for (int q = 0; q < 16; ++q) {
    const unsigned pow = 1u << (15 - q);
    lo[q] = static_cast<std::uint8_t>(pow & 0xFF);
    hi[q] = static_cast<std::uint8_t>(pow >> 8);
  }
  c.pow_lo = _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(lo)));
  c.pow_hi = _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(hi)));
  c.low_byte_off = _mm256_set1_epi16(static_cast<std::int16_t>(0x8000));  // vpshufb: byte -> 0
  c.high_byte_off = _mm256_set1_epi16(0x0080);
  c.pre_shift = _mm_cvtsi32_si128(p.pre_shift);
  c.magic_shift = _mm_cvtsi32_si128(e16.shift);
  c.mant_shift = _mm_cvtsi32_si128(p.mant_shift);
  return c;
}

inline void set_row(ShiftExp16& c, const IntExpParams& p, std::int32_t m) noexcept {
  // Scores are >= −128, so a floor below −2^15 acts as −2^15.
  c.lo = _mm256_set1_epi16(static_cast<std::int16_t>(std::max(softmax_floor(m, p.clamp), -32768)));
  c.m = _mm256_set1_epi16(static_cast<std::int16_t>(m));
}

// E of 16 int8 scores (sign-extended to int16), equal to int_exp<ShiftExp>.
[[nodiscard]] inline __m256i shift_exp16(const ShiftExp16& c, __m256i x) noexcept {
  const __m256i d = _mm256_sub_epi16(_mm256_max_epi16(x, c.lo), c.m);
  const __m256i y = _mm256_sra_epi16(d, c.pre_shift);
  const __m256i g =
      _mm256_sub_epi16(_mm256_add_epi16(y, _mm256_srai_epi16(y, 1)), _mm256_srai_epi16(y, 4));
  const __m256i u = _mm256_min_epu16(_mm256_sub_epi16(_mm256_setzero_si256(), g), c.n_d);
  const __m256i q = _mm256_srl_epi16(_mm256_mulhi_epu16(u, c.magic), c.magic_shift);
  const __m256i rem = _mm256_sub_epi16(u, _mm256_mullo_epi16(q, c.divisor));
  const __m256i mant = _mm256_sll_epi16(_mm256_sub_epi16(c.two_d, rem), c.mant_shift);
  const __m256i pow = _mm256_or_si256(
      _mm256_shuffle_epi8(c.pow_lo, _mm256_or_si256(q, c.low_byte_off)),
      _mm256_shuffle_epi8(c.pow_hi, _mm256_or_si256(_mm256_slli_epi16(q, 8), c.high_byte_off)));
  return _mm256_mulhi_epu16(mant, pow);  // ⌊mant / 2^(q+1)⌋
}

[[nodiscard]] inline std::int32_t max_epi8(__m128i b) noexcept {
  b = _mm_max_epi8(b, _mm_srli_si128(b, 8));
  b = _mm_max_epi8(b, _mm_srli_si128(b, 4));
  b = _mm_max_epi8(b, _mm_srli_si128(b, 2));
  b = _mm_max_epi8(b, _mm_srli_si128(b, 1));
  return static_cast<std::int8_t>(_mm_cvtsi128_si32(b) & 0xFF);
}

[[nodiscard]] inline __m128i load16(const void* p) noexcept {
  return _mm_loadu_si128(static_cast<const __m128i*>(p));
}

// One row; `scratch` holds cols uint16 rounded up to 16. A row of 16 or more ends with one
// vector that overlaps the one before (its repeated lanes are left out of the sum, and store the
// same E and outputs again), so only rows shorter than 16 go through a padded copy.
template <class Exp>
inline void softmax_row_int8_shift16(const SoftmaxParams<Exp, LinearProb>& params, ShiftExp16& c,
                                     const std::int8_t* x, std::uint8_t* y, Index cols,
                                     std::uint16_t* scratch) noexcept {
  alignas(16) std::int8_t pad[16];
  const std::int8_t* tail = x + cols - 16;  // the last 16 scores (valid when cols >= 16)
  if (cols < 16) {                          // lanes past the row repeat its first score
    for (Index k = 0; k < 16; ++k) pad[k] = x[k < cols ? k : 0];
    tail = pad;
  }
  __m128i vmax = load16(tail);
  if (cols >= 32) {
    __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + cols - 32));
    for (Index i = 0; i + 32 <= cols; i += 32)
      v = _mm256_max_epi8(v, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i)));
    vmax = _mm_max_epi8(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  } else if (cols >= 16) {
    vmax = _mm_max_epi8(vmax, load16(x));
  }
  set_row(c, params.exp, max_epi8(vmax));

  const __m256i ones = _mm256_set1_epi16(1);
  std::int64_t total = 0;
  __m256i acc = _mm256_setzero_si256();  // pairs of E (< 2^15 each) per int32 lane
  Index in_acc = 0;
  const Index full = cols - cols % 16;
  for (Index i = 0; i < full; i += 16) {
    const __m256i e = shift_exp16(c, _mm256_cvtepi8_epi16(load16(x + i)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(scratch + i), e);
    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(e, ones));
    if (++in_acc == (Index{1} << 15)) {
      total += Ops::reduce_add(acc);
      acc = _mm256_setzero_si256();
      in_acc = 0;
    }
  }
  const Index n_tail = cols - full;
  std::uint16_t* const tail_e = cols < 16 ? scratch : scratch + cols - 16;
  if (n_tail > 0) {  // the new scores are the last n_tail lanes (all of them when cols < 16)
    const __m256i e = shift_exp16(c, _mm256_cvtepi8_epi16(load16(tail)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(tail_e), e);
    const __m256i keep =
        cols < 16
            ? _mm256_cmpgt_epi16(_mm256_set1_epi16(static_cast<std::int16_t>(cols)), lane_index16())
            : _mm256_cmpgt_epi16(lane_index16(),
                                 _mm256_set1_epi16(static_cast<std::int16_t>(15 - n_tail)));
    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_and_si256(keep, e), ones));
  }
  total += Ops::reduce_add(acc);

  const LinearNorm n = linear_norm(total, params.out_bits);
  if (n.shift >= 17) {  // every ⌊E·f/2^16⌋ < 2^15 rounds to 0
    std::fill(y, y + cols, std::uint8_t{0});
    return;
  }
  const __m256i f = _mm256_set1_epi16(static_cast<std::int16_t>(n.factor));
  const __m256i half = _mm256_set1_epi16(static_cast<std::int16_t>(1 << (n.shift - 1)));
  const __m128i sh = _mm_cvtsi32_si128(n.shift);
  auto out16 = [&](const std::uint16_t* e_at) {
    const __m256i e = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(e_at));
    const __m256i hi = _mm256_mulhi_epu16(e, f);  // ⌊E·f / 2^16⌋ < 2^15
    const __m256i o = _mm256_srl_epi16(_mm256_add_epi16(hi, half), sh);
    return _mm_packus_epi16(_mm256_castsi256_si128(o), _mm256_extracti128_si256(o, 1));
  };
  for (Index i = 0; i < full; i += 16)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(y + i), out16(scratch + i));
  if (n_tail > 0 && cols >= 16) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(y + cols - 16), out16(tail_e));
  } else if (n_tail > 0) {
    alignas(16) std::uint8_t tmp[16];
    _mm_store_si128(reinterpret_cast<__m128i*>(tmp), out16(tail_e));
    std::memcpy(y, tmp, static_cast<std::size_t>(cols));
  }
}

template <class Exp>
inline void softmax_rows_int8_shift16(const SoftmaxParams<Exp, LinearProb>& params,
                                      const Exp16& e16, const std::int8_t* x, Index x_stride,
                                      std::uint8_t* y, Index y_stride, Index rows, Index cols) {
  constexpr Index kStackCols = 4096;
  alignas(64) std::uint16_t stack_scratch[kStackCols + 16];
  std::unique_ptr<std::uint16_t[]> heap_scratch;
  std::uint16_t* scratch = stack_scratch;
  if (cols > kStackCols) {
    heap_scratch.reset(new std::uint16_t[static_cast<std::size_t>(cols + 16)]);
    scratch = heap_scratch.get();
  }
  ShiftExp16 c = make_shift_exp16(params.exp, e16);
  for (Index r = 0; r < rows; ++r)
    softmax_row_int8_shift16(params, c, x + r * x_stride, y + r * y_stride, cols, scratch);
}

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
    if constexpr (std::is_same_v<In, std::int8_t> && std::is_same_v<Exp, ShiftExp> &&
                  std::is_same_v<Out, LinearProb>) {
      const nl_avx2::Exp16 e16 = nl_avx2::make_exp16(params.exp);
      if (e16.usable) {
        nl_avx2::softmax_rows_int8_shift16(params, e16, x, x_stride, y, y_stride, rows, cols);
        return;
      }
    }
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
