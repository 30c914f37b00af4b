// SPDX-License-Identifier: Apache-2.0
#pragma once
// int8 GEMM with a compile-time output pipeline:
//
//     C[i][j] = pipeline( Σ_k (A[i][k] − a_zero_point) · B[k][j] ,  j )
//
// Why: a quantized ViT spends almost all its time in linear layers, C = A·B with A the token
// activations (M = 197 tokens, or 1 and 8 for batched/streaming use) and B the weights. int8
// operands with int32 accumulation give 4× the multiply-adds per instruction of fp32 and a quarter
// of the weight bytes.
//
// Operands.
//   A  M×K, int8_t or uint8_t, any strides (packed per call into the path's own layout, O(M·K)).
//      a_zero_point must lie in A's type range; it is subtracted exactly.
//   B  int8 weights with zero point 0, packed once into a PackedWeightsInt8
//      (kernels/packed_weights_int8.hpp) whose depth is K and column count N; K <= 65536.
//   C  M×N, column stride 1, any row stride; its element type is the pipeline's output type
//      (int32_t for RawInt32, int8_t/uint8_t/int16_t after OutputSaturatingCast, float after a
//      dequantize stage) — checked by static_assert. C must not alias A or B.
// Accumulation is exact in int32: |a − za| <= 255, |b| <= 128, K <= 65536. The pipeline is
// applied to each exact accumulator (kernels/output_stage.hpp gives every stage's formula).
//
// Paths (kernels/arch.hpp), all bit-identical to the scalar reference:
//   arch::Scalar       the definition (detail/gemm_int8_scalar.hpp);
//   arch::Xsimd<A>     portable xsimd, int16-lane products (detail/gemm_int8_xsimd.hpp);
//   arch::Avx2         int16 operands and vpmaddwd; at M = 1, vpmaddubsw with the sign trick
//                      against its int16 saturation (detail/gemm_int8_avx2.hpp);
//   arch::Avx512Vnni   vpdpbusd, +128 shift corrected with column sums
//                      (detail/gemm_int8_avx512vnni.hpp).
// The template argument Arch forces a path; the default arch::Auto takes best_arch() (the fastest
// available one, or VITC_ARCH). A forced path this CPU cannot run throws ArgumentError.
//
// Blocking. B panels of 16 columns are swept in blocks of NV panels (VNNI: 3 for M >= 4, or 2
// when that avoids a one-panel tail; 8 for M < 4) by row blocks of MR rows (VNNI: 8, or M when
// M < 4), accumulating the whole depth in registers (24 zmm accumulators): the B block
// (NV·16·K bytes) is reused by every row block from L1/L2, and A (M·K bytes, 605 KB at most for
// DeiT-base fc2) stays in L2 across blocks. The output pipeline runs on each finished register
// tile (in AVX-512/AVX2 registers on those paths), so C is written once. Per call, A is packed
// (O(M·K)) and −offset·colsum is precomputed (O(N)); both live in 64-byte aligned scratch: the
// caller's GemmWorkspace when one is passed (then a call allocates nothing once the workspace is
// large enough: reserve() it), or buffers the call allocates and frees.
//
// Threads. `policy` (core/parallel_for.hpp: Sequential by default, or a ThreadPool) splits the
// panels of B into contiguous ranges, one per thread. Every element of C is computed by one thread
// in a fixed order, so the result does not depend on the number of threads.
//
// Errors: shape mismatches throw ShapeError, a zero point outside A's range, per-channel arrays
// shorter than N, a column stride of C other than 1, or an unavailable forced path throw
// ArgumentError. Nothing is thrown after the computation starts.

#include <cstdint>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#include "vitcompress/core/error.hpp"
#include "vitcompress/core/parallel_for.hpp"
#include "vitcompress/core/tensor.hpp"
#include "vitcompress/kernels/arch.hpp"
#include "vitcompress/kernels/detail/gemm_int8_avx2.hpp"
#include "vitcompress/kernels/detail/gemm_int8_avx512vnni.hpp"
#include "vitcompress/kernels/detail/gemm_int8_common.hpp"
#include "vitcompress/kernels/detail/gemm_int8_scalar.hpp"
#include "vitcompress/kernels/detail/gemm_int8_xsimd.hpp"
#include "vitcompress/kernels/output_stage.hpp"
#include "vitcompress/kernels/packed_weights_int8.hpp"

namespace vitc::kernels {

// C = pipeline((A − a_zero_point)·B). See the header comment for the contract.
template <class Arch = arch::Auto, class Native = arch::XsimdNative, class AT,
          OutputPipeline Pipeline, class OutT, class Policy = Sequential>
void gemm_int8(TensorView<AT, 2> a, std::int32_t a_zero_point, const PackedWeightsInt8& b,
               const Pipeline& pipeline, TensorView<OutT, 2> c, Policy&& policy = Policy{},
               GemmWorkspace* workspace = nullptr) {
  using A = std::remove_const_t<AT>;
  static_assert(std::is_same_v<A, std::int8_t> || std::is_same_v<A, std::uint8_t>,
                "gemm_int8: A must hold int8_t or uint8_t");
  static_assert(std::is_same_v<pipeline_output_t<Pipeline>, OutT>,
                "gemm_int8: C's element type must be the output pipeline's result type");
  static_assert(!std::is_const_v<OutT>, "gemm_int8: C must be writable");
  const Index m = a.extent(0), k = a.extent(1), n = b.cols();
  if (k != b.depth())
    VITC_THROW(ShapeError("gemm_int8: A has " + std::to_string(k) + " columns but B has depth " +
                          std::to_string(b.depth())));
  if (c.extent(0) != m || c.extent(1) != n)
    VITC_THROW(ShapeError("gemm_int8: C is " + vitc::detail::shape_string(c.shape()) +
                          ", expected [" + std::to_string(m) + ", " + std::to_string(n) + "]"));
  if (n > 1 && m > 0 && c.stride(1) != 1)
    VITC_THROW(ArgumentError("gemm_int8: C must have column stride 1"));
  constexpr std::int32_t lo = std::is_same_v<A, std::int8_t> ? -128 : 0;
  constexpr std::int32_t hi = std::is_same_v<A, std::int8_t> ? 127 : 255;
  if (a_zero_point < lo || a_zero_point > hi)
    VITC_THROW(ArgumentError("gemm_int8: a_zero_point = " + std::to_string(a_zero_point) +
                             " is outside the range of A's element type"));
  validate_pipeline(pipeline, n);
  if (!arch::runnable<Arch>())
    VITC_THROW(ArgumentError("gemm_int8: the forced path '" + std::string(Arch::kName) +
                             "' is not available on this build or CPU"));
  if (m == 0 || n == 0) return;

  detail::GemmInt8Problem<A, OutT> p;
  p.a = a.data();
  p.a_row_stride = a.stride(0);
  p.a_col_stride = a.stride(1);
  p.a_zero_point = a_zero_point;
  p.m = m;
  p.k = k;
  p.n = n;
  p.b = &b;
  p.c = c.data();
  p.c_row_stride = c.stride(0);
  p.ws = workspace;
  auto& pol = policy;
  if constexpr (std::is_same_v<Arch, arch::Auto>) {
    arch::dispatch<Native>(arch::best_arch<Native>(),
                           [&](auto tag) { detail::gemm_int8_run(tag, p, pipeline, pol); });
  } else {
    detail::gemm_int8_run(Arch{}, p, pipeline, pol);
  }
}

// Raw int32 accumulators: C = (A − a_zero_point)·B.
template <class Arch = arch::Auto, class Native = arch::XsimdNative, class AT,
          class Policy = Sequential>
void gemm_int8(TensorView<AT, 2> a, std::int32_t a_zero_point, const PackedWeightsInt8& b,
               TensorView<std::int32_t, 2> c, Policy&& policy = Policy{},
               GemmWorkspace* workspace = nullptr) {
  gemm_int8<Arch, Native>(a, a_zero_point, b, RawInt32{}, c, std::forward<Policy>(policy),
                          workspace);
}

}  // namespace vitc::kernels
