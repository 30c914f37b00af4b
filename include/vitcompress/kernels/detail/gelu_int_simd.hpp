// SPDX-License-Identifier: Apache-2.0
#pragma once
// Integer GELU SIMD paths: the 32-bit-lane body (detail/gelu_int_body.inc) compiled for xsimd,
// AVX2 and AVX-512 for int32 inputs. int8 inputs read the 256-entry output table
// GeluParams::int8_table: with vpermi2w (AVX-512BW), 16 vpshufb (AVX2), scalar loads (xsimd).
// ShiftGelu on int32 inputs reads the 64 KiB output table GeluParams::int32_table (indexed by x_p)
// on every SIMD path.

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "vitcompress/core/tensor.hpp"
#include "vitcompress/kernels/arch.hpp"
#include "vitcompress/kernels/detail/gelu_int_types.hpp"
#include "vitcompress/kernels/detail/nonlinear_int_ops.hpp"
#include "vitcompress/kernels/detail/softmax_int_simd.hpp"

// See detail/softmax_int_simd.hpp (GCC bug 105593).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

namespace vitc::kernels::detail {

// ShiftGelu with int32 inputs on every SIMD path: out = int32_table[x_p + 2^15], one byte load
// per element. The table is the definition evaluated at every x_p, so this equals it; scalar
// loads beat both the 32-bit-lane formula (a 15-step restoring division per lane) and vpgatherdd
// (measured on Zen 4: vpgatherdd ran no faster than scalar loads).
inline void gelu_rows_int32_lookup(const GeluParams<ShiftGelu, std::int32_t>& params,
                                   const std::int32_t* x, Index x_stride, std::int8_t* y,
                                   Index y_stride, Index rows, Index cols) noexcept {
  const std::int8_t* tab = params.int32_table.data() + 32768;
  const std::int32_t lo = params.in_min, hi = params.in_max, sh = params.pre_shift;
  for (Index r = 0; r < rows; ++r) {
    const std::int32_t* xr = x + r * x_stride;
    std::int8_t* yr = y + r * y_stride;
    for (Index i = 0; i < cols; ++i) yr[i] = tab[std::min(std::max(xr[i], lo), hi) >> sh];
  }
}

// int8 inputs on the xsimd paths (xsimd 8.1 has no 256-entry byte lookup; NEON's tbl is not
// exposed): out = int8_table[x + 128], one load per element from a 1 KiB table that is the
// definition evaluated at every input. On Zen 3 it ran 1.5-2x faster than the 32-bit-lane
// formulas of the xsimd path.
template <class Policy>
inline void gelu_rows_int8_lookup(const GeluParams<Policy, std::int8_t>& params,
                                  const std::int8_t* x, Index x_stride, std::int8_t* y,
                                  Index y_stride, Index rows, Index cols) noexcept {
  const std::int32_t* tab = params.int8_table.data() + 128;
  for (Index r = 0; r < rows; ++r) {
    const std::int8_t* xr = x + r * x_stride;
    std::int8_t* yr = y + r * y_stride;
    for (Index i = 0; i < cols; ++i) yr[i] = static_cast<std::int8_t>(tab[xr[i]]);
  }
}
}  // namespace vitc::kernels::detail

namespace vitc::kernels::detail::nl_xsimd {
#include "vitcompress/kernels/detail/gelu_int_body.inc"
}  // namespace vitc::kernels::detail::nl_xsimd

#if VITC_HAVE_X86_TARGET_KERNELS

VITC_NL_BEGIN_AVX2
namespace vitc::kernels::detail::nl_avx2 {
#include "vitcompress/kernels/detail/gelu_int_body.inc"

// int8 inputs: the 256-entry output table as 16 vpshufb tables of 16 bytes, selected by the high
// nibble of x + 128 (compare, AND, OR). 32 outputs per 16 rounds; the table is the definition.
template <class Policy>
inline void gelu_rows_int8_table(const GeluParams<Policy, std::int8_t>& params,
                                 const std::int8_t* x, Index x_stride, std::int8_t* y,
                                 Index y_stride, Index rows, Index cols) noexcept {
  alignas(32) std::int8_t tab[256];
  for (int i = 0; i < 256; ++i)
    tab[i] = static_cast<std::int8_t>(params.int8_table[static_cast<std::size_t>(i)]);
  const __m256i low4 = _mm256_set1_epi8(0x0F), flip = _mm256_set1_epi8(-128);
  auto lookup32 = [&](__m256i v) {
    const __m256i idx = _mm256_xor_si256(v, flip);  // x + 128 as a byte
    const __m256i lo = _mm256_and_si256(idx, low4);
    const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(idx, 4), low4);
    __m256i out = _mm256_setzero_si256();
    for (int h = 0; h < 16; ++h) {
      const __m256i t = _mm256_broadcastsi128_si256(
          _mm_load_si128(reinterpret_cast<const __m128i*>(tab + 16 * h)));
      const __m256i sel = _mm256_cmpeq_epi8(hi, _mm256_set1_epi8(static_cast<char>(h)));
      out = _mm256_or_si256(out, _mm256_and_si256(sel, _mm256_shuffle_epi8(t, lo)));
    }
    return out;
  };
  for (Index r = 0; r < rows; ++r) {
    const std::int8_t* xr = x + r * x_stride;
    std::int8_t* yr = y + r * y_stride;
    Index i = 0;
    for (; i + 32 <= cols; i += 32)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(yr + i),
                          lookup32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(xr + i))));
    if (i < cols) {  // the tail through a zero-padded copy
      alignas(32) std::int8_t in[32] = {}, out[32];
      std::memcpy(in, xr + i, static_cast<std::size_t>(cols - i));
      _mm256_store_si256(reinterpret_cast<__m256i*>(out),
                         lookup32(_mm256_load_si256(reinterpret_cast<const __m256i*>(in))));
      std::memcpy(yr + i, out, static_cast<std::size_t>(cols - i));
    }
  }
}
}  // namespace vitc::kernels::detail::nl_avx2
VITC_NL_END

VITC_NL_BEGIN_AVX512
namespace vitc::kernels::detail::nl_avx512 {
#include "vitcompress/kernels/detail/gelu_int_body.inc"

template <class Policy>
inline void gelu_rows_int8_table(const GeluParams<Policy, std::int8_t>& params,
                                 const std::int8_t* x, Index x_stride, std::int8_t* y,
                                 Index y_stride, Index rows, Index cols) noexcept {
  const Table256 tab = load_table256(params.int8_table.data());
  const __m512i bias = _mm512_set1_epi16(128);
  for (Index r = 0; r < rows; ++r) {
    const std::int8_t* xr = x + r * x_stride;
    std::int8_t* yr = y + r * y_stride;
    for (Index i = 0; i < cols; i += 32) {
      const __mmask32 k = tail_mask32(cols - i);
      const __m512i v = _mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(k, xr + i));
      const __m512i out = lookup256(tab, _mm512_add_epi16(v, bias));
      _mm256_mask_storeu_epi8(yr + i, k, _mm512_cvtepi16_epi8(out));
    }
  }
}

}  // namespace vitc::kernels::detail::nl_avx512
VITC_NL_END

#endif  // VITC_HAVE_X86_TARGET_KERNELS

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

namespace vitc::kernels::detail {

template <class Tag, class Policy, class In>
void gelu_rows_simd(Tag, const GeluParams<Policy, In>& params, const In* x, Index x_stride,
                    std::int8_t* y, Index y_stride, Index rows, Index cols) {
  [[maybe_unused]] constexpr bool kInt32Shift =
      std::is_same_v<In, std::int32_t> && std::is_same_v<Policy, ShiftGelu>;
  if constexpr (kInt32Shift) {
    if (params.int32_table.size() == kGeluInt32TableSize) {
      gelu_rows_int32_lookup(params, x, x_stride, y, y_stride, rows, cols);
      return;
    }
  }
  if constexpr (arch::kIsXsimd<Tag> && std::is_same_v<In, std::int8_t>) {
    gelu_rows_int8_lookup(params, x, x_stride, y, y_stride, rows, cols);
  } else if constexpr (arch::kIsXsimd<Tag>) {
    nl_xsimd::gelu_rows_body<XsimdOps<typename Tag::xsimd_arch>>(params, x, x_stride, y, y_stride,
                                                                 rows, cols);
#if VITC_HAVE_X86_TARGET_KERNELS
  } else if constexpr (std::is_same_v<Tag, arch::Avx2>) {
    if constexpr (std::is_same_v<In, std::int8_t>)
      nl_avx2::gelu_rows_int8_table(params, x, x_stride, y, y_stride, rows, cols);
    else
      nl_avx2::gelu_rows_body<nl_avx2::Ops>(params, x, x_stride, y, y_stride, rows, cols);
  } else if constexpr (std::is_same_v<Tag, arch::Avx512Vnni>) {
    if constexpr (std::is_same_v<In, std::int8_t>)
      nl_avx512::gelu_rows_int8_table(params, x, x_stride, y, y_stride, rows, cols);
    else
      nl_avx512::gelu_rows_body<nl_avx512::Ops>(params, x, x_stride, y, y_stride, rows, cols);
#endif
  } else {
    static_assert(arch::kIsXsimd<Tag>, "gelu_int: no SIMD path for this arch tag");
  }
}

}  // namespace vitc::kernels::detail
