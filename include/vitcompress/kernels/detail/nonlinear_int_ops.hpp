// SPDX-License-Identifier: Apache-2.0
#pragma once
// 32-bit-lane vector operations shared by the integer nonlinear kernels (softmax_int, gelu_int,
// layernorm_int). One kernel body (detail/<kernel>_body.inc) is written against this interface
// and compiled three times:
//   XsimdOps<A>       xsimd 8.1 batches, any xsimd arch the TU's flags enable (NEON included);
//   nl_avx2::Ops      raw AVX2 intrinsics, in a region compiled for AVX2 (VITC_NL_BEGIN_AVX2);
//   nl_avx512::Ops    raw AVX-512 (F/BW/DQ/VL) intrinsics, in an AVX-512 region.
// The x86 regions use `#pragma GCC target` (Clang: `#pragma clang attribute`), as highway's
// HWY_PUSH_ATTRIBUTES does: every function defined inside, templates included, gets the target,
// so the body inlines the ops without -march flags. A body instantiated in such a region only
// runs after the arch tag's available() said yes (kernels/arch.hpp).
//
// Interface (V holds kLanes int32 lanes, M a lane mask):
//   set1 zero; load(p) from int8/int16/int32/uint8/uint16 (widened: sign- or zero-extended);
//   store (int32); store_u8/store_i8/store_u16 narrow values already in range; add sub mul(low 32
//   bits) min max and_; sra/srl/sll by a uniform count in [0, 31]; srav/srlv/sllv by per-lane
//   counts in [0, 31]; SqAcc sq_zero sq_add sq_reduce: Σv² exact for |v| < 2^24 over 128 sq_add; gt
//   eq (M); select(m, a, b) = m ? a : b; abs (wraps at INT32_MIN); reduce_max; reduce_add (exact,
//   in int64). Optional: Table16, load_table16, lookup16 (16-entry permute; the x86 ops have it,
//   xsimd 8.1 has no variable permute).

#include <array>
#include <cstddef>
#include <cstdint>
#include <limits>

#include <xsimd/xsimd.hpp>

#include "vitcompress/kernels/arch.hpp"

#if VITC_HAVE_X86_TARGET_KERNELS
#include <immintrin.h>

// _Pragma takes a single string literal: these lines must not be re-wrapped.
// clang-format off
#if defined(__clang__)
#define VITC_NL_BEGIN_AVX2 _Pragma("clang attribute push(__attribute__((target(\"avx2,fma,bmi,bmi2,popcnt,f16c\"))), apply_to = function)")
#define VITC_NL_BEGIN_AVX512 _Pragma("clang attribute push(__attribute__((target(\"avx2,fma,bmi,bmi2,popcnt,f16c,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni\"))), apply_to = function)")
#define VITC_NL_END _Pragma("clang attribute pop")
#else
#define VITC_NL_BEGIN_AVX2 _Pragma("GCC push_options") _Pragma("GCC target(\"avx2,fma,bmi,bmi2,popcnt,f16c\")")
#define VITC_NL_BEGIN_AVX512 _Pragma("GCC push_options") _Pragma("GCC target(\"avx2,fma,bmi,bmi2,popcnt,f16c,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni\")")
#define VITC_NL_END _Pragma("GCC pop_options")
#endif
// clang-format on
#endif  // VITC_HAVE_X86_TARGET_KERNELS

namespace vitc::kernels::detail {

// 0, 1, …, 15: compared with n, the lanes of a row's last partial vector.
alignas(64) inline constexpr std::array<std::int32_t, 16> kLaneIndex = {
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};

template <class A>
struct XsimdOps {
  using V = xsimd::batch<std::int32_t, A>;
  using M = xsimd::batch_bool<std::int32_t, A>;
  using U = xsimd::batch<std::uint32_t, A>;
  static constexpr int kLanes = static_cast<int>(V::size);

  static V set1(std::int32_t v) noexcept { return V(v); }
  static V zero() noexcept { return V(0); }
  template <class T>
  static V load(const T* p) noexcept {
    if constexpr (std::is_same_v<T, std::int32_t>) {
      return V::load_unaligned(p);
    } else {
      alignas(64) std::int32_t tmp[kLanes];
      for (int i = 0; i < kLanes; ++i) tmp[i] = p[i];
      return V::load_aligned(tmp);
    }
  }
  template <class T>
  static void store_narrow(T* p, V v) noexcept {
    alignas(64) std::int32_t tmp[kLanes];
    v.store_aligned(tmp);
    for (int i = 0; i < kLanes; ++i) p[i] = static_cast<T>(tmp[i]);
  }
  static void store(std::int32_t* p, V v) noexcept { v.store_unaligned(p); }
  static void store_u8(std::uint8_t* p, V v) noexcept { store_narrow(p, v); }
  static void store_i8(std::int8_t* p, V v) noexcept { store_narrow(p, v); }
  static void store_u16(std::uint16_t* p, V v) noexcept { store_narrow(p, v); }
  static V add(V a, V b) noexcept { return a + b; }
  static V sub(V a, V b) noexcept { return a - b; }
  static V mul(V a, V b) noexcept { return a * b; }
  static V min(V a, V b) noexcept { return xsimd::min(a, b); }
  static V max(V a, V b) noexcept { return xsimd::max(a, b); }
  static V and_(V a, V b) noexcept { return a & b; }
  static V sra(V a, int n) noexcept { return a >> n; }
  static V srl(V a, int n) noexcept {
    return xsimd::bitwise_cast<V>(xsimd::bitwise_cast<U>(a) >> n);
  }
  static V sll(V a, int n) noexcept { return a << n; }
  static V srav(V a, V n) noexcept { return a >> n; }
  static V srlv(V a, V n) noexcept {
    return xsimd::bitwise_cast<V>(xsimd::bitwise_cast<U>(a) >> xsimd::bitwise_cast<U>(n));
  }
  static V sllv(V a, V n) noexcept { return a << n; }
  static M gt(V a, V b) noexcept { return a > b; }
  static M eq(V a, V b) noexcept { return a == b; }
  static V select(M m, V a, V b) noexcept { return xsimd::select(m, a, b); }
  static V abs(V a) noexcept { return xsimd::abs(a); }
  // Σv² for |v| < 2^24 without 64-bit lanes: v = h·2^12 + l, l ∈ [0, 2^12), so
  // v² = h²·2^24 + h·l·2^13 + l², each term below 2^24: 128 additions per lane are exact.
  struct SqAcc {
    V hh, hl, ll;
  };
  static SqAcc sq_zero() noexcept { return {zero(), zero(), zero()}; }
  static void sq_add(SqAcc& acc, V v) noexcept {
    const V h = v >> 12, l = v & V(4095);
    acc.hh = acc.hh + h * h;
    acc.hl = acc.hl + h * l;
    acc.ll = acc.ll + l * l;
  }
  static std::int64_t sq_reduce(const SqAcc& acc) noexcept {
    return reduce_add(acc.hh) * (std::int64_t{1} << 24) + reduce_add(acc.hl) * (1 << 13) +
           reduce_add(acc.ll);
  }
  static std::int32_t reduce_max(V v) noexcept {
    alignas(64) std::int32_t tmp[kLanes];
    v.store_aligned(tmp);
    std::int32_t m = tmp[0];
    for (int i = 1; i < kLanes; ++i) m = tmp[i] > m ? tmp[i] : m;
    return m;
  }
  static std::int64_t reduce_add(V v) noexcept {
    alignas(64) std::int32_t tmp[kLanes];
    v.store_aligned(tmp);
    std::int64_t s = 0;
    for (int i = 0; i < kLanes; ++i) s += tmp[i];
    return s;
  }
};

}  // namespace vitc::kernels::detail

#if VITC_HAVE_X86_TARGET_KERNELS

VITC_NL_BEGIN_AVX2
namespace vitc::kernels::detail::nl_avx2 {

struct Ops {
  using V = __m256i;
  using M = __m256i;  // all-ones lanes
  static constexpr int kLanes = 8;

  static V set1(std::int32_t v) noexcept { return _mm256_set1_epi32(v); }
  static V zero() noexcept { return _mm256_setzero_si256(); }
  static V load(const std::int32_t* p) noexcept {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  }
  static V load(const std::int16_t* p) noexcept {
    return _mm256_cvtepi16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static V load(const std::uint16_t* p) noexcept {
    return _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static V load(const std::int8_t* p) noexcept {
    return _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  }
  static V load(const std::uint8_t* p) noexcept {
    return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  }
  // 8 int32 lanes -> 8 int16 (saturating; values are in range), in order.
  static __m128i pack16(V v) noexcept {
    return _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  }
  static void store(std::int32_t* p, V v) noexcept {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v);
  }
  static void store_u16(std::uint16_t* p, V v) noexcept {
    const __m128i w = _mm_packus_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), w);
  }
  static void store_i8(std::int8_t* p, V v) noexcept {
    const __m128i w = pack16(v);
    _mm_storel_epi64(reinterpret_cast<__m128i*>(p), _mm_packs_epi16(w, w));
  }
  static void store_u8(std::uint8_t* p, V v) noexcept {
    const __m128i w = pack16(v);
    _mm_storel_epi64(reinterpret_cast<__m128i*>(p), _mm_packus_epi16(w, w));
  }
  // 4 × 8 lanes, values in [0, 255], to 32 bytes in order: the in-lane packs leave 4-byte groups
  // a0 b0 c0 d0 | a1 b1 c1 d1, which one vpermd puts back in order.
  static void store_u8x4(std::uint8_t* p, V a, V b, V c, V d) noexcept {
    const V packed = _mm256_packus_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, d));
    _mm256_storeu_si256(
        reinterpret_cast<__m256i*>(p),
        _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
  }
  static V add(V a, V b) noexcept { return _mm256_add_epi32(a, b); }
  static V sub(V a, V b) noexcept { return _mm256_sub_epi32(a, b); }
  static V mul(V a, V b) noexcept { return _mm256_mullo_epi32(a, b); }
  static V min(V a, V b) noexcept { return _mm256_min_epi32(a, b); }
  static V max(V a, V b) noexcept { return _mm256_max_epi32(a, b); }
  static V and_(V a, V b) noexcept { return _mm256_and_si256(a, b); }
  static V sra(V a, int n) noexcept { return _mm256_sra_epi32(a, _mm_cvtsi32_si128(n)); }
  static V srl(V a, int n) noexcept { return _mm256_srl_epi32(a, _mm_cvtsi32_si128(n)); }
  static V sll(V a, int n) noexcept { return _mm256_sll_epi32(a, _mm_cvtsi32_si128(n)); }
  static V srav(V a, V n) noexcept { return _mm256_srav_epi32(a, n); }
  static V sllv(V a, V n) noexcept { return _mm256_sllv_epi32(a, n); }
  static V srlv(V a, V n) noexcept { return _mm256_srlv_epi32(a, n); }
  // Σv² in int64 lanes (vpmuldq on even and odd lanes).
  struct SqAcc {
    __m256i s;
  };
  static SqAcc sq_zero() noexcept { return {_mm256_setzero_si256()}; }
  static void sq_add(SqAcc& acc, V v) noexcept {
    const __m256i odd = _mm256_srli_epi64(v, 32);
    acc.s = _mm256_add_epi64(acc.s,
                             _mm256_add_epi64(_mm256_mul_epi32(v, v), _mm256_mul_epi32(odd, odd)));
  }
  static std::int64_t sq_reduce(const SqAcc& acc) noexcept {
    const __m128i t =
        _mm_add_epi64(_mm256_castsi256_si128(acc.s), _mm256_extracti128_si256(acc.s, 1));
    return _mm_cvtsi128_si64(t) + _mm_extract_epi64(t, 1);
  }
  static M gt(V a, V b) noexcept { return _mm256_cmpgt_epi32(a, b); }
  static M eq(V a, V b) noexcept { return _mm256_cmpeq_epi32(a, b); }
  static V select(M m, V a, V b) noexcept { return _mm256_blendv_epi8(b, a, m); }
  static V abs(V a) noexcept { return _mm256_abs_epi32(a); }
  // 16-entry int32 table lookup, idx in [0, 15].
  struct Table16 {
    V lo, hi;
  };
  static Table16 load_table16(const std::int32_t* t) noexcept { return {load(t), load(t + 8)}; }
  static V lookup16(const Table16& t, V idx) noexcept {
    const V a = _mm256_permutevar8x32_epi32(t.lo, idx);  // uses idx bits 0..2
    const V b = _mm256_permutevar8x32_epi32(t.hi, idx);
    const V high = _mm256_srai_epi32(_mm256_slli_epi32(idx, 28), 31);  // idx >= 8: all ones
    return _mm256_blendv_epi8(a, b, high);
  }
  static std::int32_t reduce_max(V v) noexcept {
    __m128i m = _mm_max_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    m = _mm_max_epi32(m, _mm_shuffle_epi32(m, 0x4E));
    m = _mm_max_epi32(m, _mm_shuffle_epi32(m, 0xB1));
    return _mm_cvtsi128_si32(m);
  }
  static std::int64_t reduce_add(V v) noexcept {
    const __m256i lo = _mm256_cvtepi32_epi64(_mm256_castsi256_si128(v));
    const __m256i hi = _mm256_cvtepi32_epi64(_mm256_extracti128_si256(v, 1));
    const __m256i s = _mm256_add_epi64(lo, hi);
    const __m128i t = _mm_add_epi64(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    return _mm_cvtsi128_si64(t) + _mm_extract_epi64(t, 1);
  }
};

}  // namespace vitc::kernels::detail::nl_avx2
VITC_NL_END

// See detail/softmax_int_simd.hpp (GCC bug 105593).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

VITC_NL_BEGIN_AVX512
namespace vitc::kernels::detail::nl_avx512 {

struct Ops {
  using V = __m512i;
  using M = __mmask16;
  static constexpr int kLanes = 16;

  static V set1(std::int32_t v) noexcept { return _mm512_set1_epi32(v); }
  static V zero() noexcept { return _mm512_setzero_si512(); }
  static V load(const std::int32_t* p) noexcept { return _mm512_loadu_si512(p); }
  static V load(const std::int16_t* p) noexcept {
    return _mm512_cvtepi16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static V load(const std::uint16_t* p) noexcept {
    return _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static V load(const std::int8_t* p) noexcept {
    return _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static V load(const std::uint8_t* p) noexcept {
    return _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static void store(std::int32_t* p, V v) noexcept { _mm512_storeu_si512(p, v); }
  static void store_u16(std::uint16_t* p, V v) noexcept {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(v));
  }
  static void store_i8(std::int8_t* p, V v) noexcept {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm512_cvtepi32_epi8(v));
  }
  static void store_u8(std::uint8_t* p, V v) noexcept {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm512_cvtepi32_epi8(v));
  }
  static V add(V a, V b) noexcept { return _mm512_add_epi32(a, b); }
  static V sub(V a, V b) noexcept { return _mm512_sub_epi32(a, b); }
  static V mul(V a, V b) noexcept { return _mm512_mullo_epi32(a, b); }
  static V min(V a, V b) noexcept { return _mm512_min_epi32(a, b); }
  static V max(V a, V b) noexcept { return _mm512_max_epi32(a, b); }
  static V and_(V a, V b) noexcept { return _mm512_and_si512(a, b); }
  static V sra(V a, int n) noexcept { return _mm512_sra_epi32(a, _mm_cvtsi32_si128(n)); }
  static V srl(V a, int n) noexcept { return _mm512_srl_epi32(a, _mm_cvtsi32_si128(n)); }
  static V sll(V a, int n) noexcept { return _mm512_sll_epi32(a, _mm_cvtsi32_si128(n)); }
  static V srav(V a, V n) noexcept { return _mm512_srav_epi32(a, n); }
  static V sllv(V a, V n) noexcept { return _mm512_sllv_epi32(a, n); }
  static V srlv(V a, V n) noexcept { return _mm512_srlv_epi32(a, n); }
  struct SqAcc {
    __m512i s;
  };
  static SqAcc sq_zero() noexcept { return {_mm512_setzero_si512()}; }
  static void sq_add(SqAcc& acc, V v) noexcept {
    const __m512i odd = _mm512_srli_epi64(v, 32);
    acc.s = _mm512_add_epi64(acc.s,
                             _mm512_add_epi64(_mm512_mul_epi32(v, v), _mm512_mul_epi32(odd, odd)));
  }
  static std::int64_t sq_reduce(const SqAcc& acc) noexcept {
    return _mm512_reduce_add_epi64(acc.s);
  }
  static M gt(V a, V b) noexcept { return _mm512_cmpgt_epi32_mask(a, b); }
  static M eq(V a, V b) noexcept { return _mm512_cmpeq_epi32_mask(a, b); }
  static V select(M m, V a, V b) noexcept { return _mm512_mask_blend_epi32(m, b, a); }
  static V abs(V a) noexcept { return _mm512_abs_epi32(a); }
  struct Table16 {
    V t;
  };
  static Table16 load_table16(const std::int32_t* t) noexcept { return {load(t)}; }
  static V lookup16(const Table16& t, V idx) noexcept { return _mm512_permutexvar_epi32(idx, t.t); }
  static std::int32_t reduce_max(V v) noexcept { return _mm512_reduce_max_epi32(v); }
  static std::int64_t reduce_add(V v) noexcept {
    const __m512i lo = _mm512_cvtepi32_epi64(_mm512_castsi512_si256(v));
    const __m512i hi = _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(v, 1));
    return _mm512_reduce_add_epi64(_mm512_add_epi64(lo, hi));
  }
};

}  // namespace vitc::kernels::detail::nl_avx512
VITC_NL_END

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

#endif  // VITC_HAVE_X86_TARGET_KERNELS
