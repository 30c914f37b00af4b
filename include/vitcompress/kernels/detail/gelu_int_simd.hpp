// SPDX-License-Identifier: Apache-2.0
#pragma once
// Integer GELU SIMD paths: the 32-bit-lane body (detail/gelu_int_body.inc) compiled for xsimd,
// AVX2 and AVX-512, an AVX-512BW path for int8 inputs that reads the 256-entry output table
// GeluParams::int8_table with vpermi2w. ShiftGelu on int32 inputs reads the 64 KiB output table
// GeluParams::int32_table (indexed by x_p) on every SIMD path.

#include <algorithm>
#include <cstdint>
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
}  // namespace vitc::kernels::detail

namespace vitc::kernels::detail::nl_xsimd {
#include "vitcompress/kernels/detail/gelu_int_body.inc"
}  // namespace vitc::kernels::detail::nl_xsimd

#if VITC_HAVE_X86_TARGET_KERNELS

VITC_NL_BEGIN_AVX2
namespace vitc::kernels::detail::nl_avx2 {
#include "vitcompress/kernels/detail/gelu_int_body.inc"
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
  if constexpr (arch::kIsXsimd<Tag>) {
    nl_xsimd::gelu_rows_body<XsimdOps<typename Tag::xsimd_arch>>(params, x, x_stride, y, y_stride,
                                                                 rows, cols);
#if VITC_HAVE_X86_TARGET_KERNELS
  } else if constexpr (std::is_same_v<Tag, arch::Avx2>) {
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
