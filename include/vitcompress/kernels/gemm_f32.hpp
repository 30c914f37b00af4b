// SPDX-License-Identifier: Apache-2.0
#pragma once
// fp32 GEMM on weights packed once, with a fused bias / residual epilogue:
//
//     C[i][j] = ( Σ_k A[i][k]·B[k][j] ) + bias[j] + residual[i][j]
//
// Why: the float ViT spends nearly all its time in linear layers C = A·B with A the token
// activations and B the weights. A general GEMM (Eigen, BLAS) re-packs B on every call; packing
// it once at model load (kernels/packed_weights_f32.hpp) and running a register-blocked
// microkernel straight on the panels leaves only the multiply-adds.
//
// Summation order (the definition, detail::gemm_f32_reference_element): each C element is
// accumulated over k = 0..K-1 in order, starting from +0, with one fused multiply-add per k
// (std::fma in the scalar path, vfmadd in the SIMD paths); then bias is added, then the residual,
// each one IEEE add. Every path follows it, so all paths are bit-identical to the scalar
// reference, for any thread count and any blocking.
//
// Operands.
//   A  M×K float, any strides. With column stride 1 it is read in place; otherwise it is first
//      copied to rows of K floats in `workspace` (or a temporary when none is given).
//   B  PackedWeightsF32 / PackedPanelsF32 of depth K and N columns.
//   C  M×N, column stride 1, any row stride. Must not overlap A or B.
//   epilogue.bias      N floats or empty (data() == nullptr: no bias).
//   epilogue.residual  M×N with column stride 1, or empty. May be C itself (same data and row
//                      stride: an in-place residual add); any other overlap with C is an error.
//
// Paths (kernels/arch.hpp), all bit-identical to the scalar reference:
//   arch::Scalar      the definition (detail/gemm_f32_scalar.hpp);
//   arch::Xsimd<A>    portable xsimd batches (detail/gemm_f32_xsimd.hpp; needs a fused FMA);
//   arch::Avx2        AVX2+FMA, 6×16 tiles (detail/gemm_f32_avx2.hpp);
//   arch::Avx512Vnni  AVX-512F, 8×48 tiles (detail/gemm_f32_avx512.hpp; the tag is shared with
//                     the int8 kernels, the fp32 path uses only AVX-512F).
// Arch forces a path; the default arch::Auto takes best_arch() (or VITC_ARCH). A forced path this
// CPU cannot run throws ArgumentError.
//
// Threads: `policy` (core/parallel_for.hpp) splits the column panels, in tile-wide blocks, over
// its threads; each element is computed by one thread in the fixed order above. GEMMs under
// 2^16 multiply-adds run on the caller.
//
// Errors: shape mismatches throw ShapeError; a column stride of C or the residual other than 1 or
// an unavailable forced path throw ArgumentError. Nothing is thrown after the computation starts.

#include <string>
#include <type_traits>
#include <utility>

#include "vitcompress/core/error.hpp"
#include "vitcompress/core/parallel_for.hpp"
#include "vitcompress/core/tensor.hpp"
#include "vitcompress/kernels/arch.hpp"
#include "vitcompress/kernels/detail/gemm_f32_avx2.hpp"
#include "vitcompress/kernels/detail/gemm_f32_avx512.hpp"
#include "vitcompress/kernels/detail/gemm_f32_common.hpp"
#include "vitcompress/kernels/detail/gemm_f32_scalar.hpp"
#include "vitcompress/kernels/detail/gemm_f32_xsimd.hpp"
#include "vitcompress/kernels/packed_weights_f32.hpp"

namespace vitc::kernels {

// What is added to A·B. Default-constructed members mean "nothing".
struct GemmF32Epilogue {
  TensorView<const float, 1> bias;
  TensorView<const float, 2> residual;
};

// Scratch for a strided A and for the partial sums of a deep product (K > 2048: M·16·panels
// floats), reused across calls (grows, never shrinks). Without one, such calls allocate.
class GemmF32Workspace {
 public:
  float* get(Index n) {
    if (buf_.size() < n) buf_ = Tensor<float, 1>({n});
    return buf_.data();
  }

 private:
  Tensor<float, 1> buf_;
};

// C = A·B + epilogue. See the header comment for the contract.
template <class Arch = arch::Auto, class Native = arch::XsimdNative, class Policy = Sequential>
void gemm_f32(TensorView<const float, 2> a, const PackedPanelsF32& b, TensorView<float, 2> c,
              const GemmF32Epilogue& epilogue = {}, Policy&& policy = Policy{},
              GemmF32Workspace* workspace = nullptr) {
  const Index m = a.extent(0), k = a.extent(1), n = b.cols();
  if (k != b.depth())
    VITC_THROW(ShapeError("gemm_f32: A has " + std::to_string(k) + " columns but B has depth " +
                          std::to_string(b.depth())));
  if (c.extent(0) != m || c.extent(1) != n)
    VITC_THROW(ShapeError("gemm_f32: C is " + vitc::detail::shape_string(c.shape()) +
                          ", expected [" + std::to_string(m) + ", " + std::to_string(n) + "]"));
  if (n > 1 && m > 0 && c.stride(1) != 1)
    VITC_THROW(ArgumentError("gemm_f32: C must have column stride 1"));
  const bool has_bias = epilogue.bias.data() != nullptr;
  const bool has_res = epilogue.residual.data() != nullptr;
  if (has_bias && (epilogue.bias.extent(0) != n || (n > 1 && epilogue.bias.stride(0) != 1)))
    VITC_THROW(ShapeError("gemm_f32: bias must hold N = " + std::to_string(n) +
                          " contiguous floats, got " +
                          vitc::detail::shape_string(epilogue.bias.shape())));
  if (has_res) {
    if (epilogue.residual.extent(0) != m || epilogue.residual.extent(1) != n)
      VITC_THROW(ShapeError("gemm_f32: residual is " +
                            vitc::detail::shape_string(epilogue.residual.shape()) + ", expected [" +
                            std::to_string(m) + ", " + std::to_string(n) + "]"));
    if (n > 1 && m > 0 && epilogue.residual.stride(1) != 1)
      VITC_THROW(ArgumentError("gemm_f32: residual must have column stride 1"));
  }
  if (!arch::runnable<Arch>())
    VITC_THROW(ArgumentError("gemm_f32: the forced path '" + std::string(Arch::kName) +
                             "' is not available on this build or CPU"));
  if (m == 0 || n == 0) return;

  detail::GemmF32Problem p;
  p.m = m;
  p.k = k;
  p.n = n;
  p.b = b;
  p.c = c.data();
  p.ldc = c.stride(0);
  p.bias = has_bias ? epilogue.bias.data() : nullptr;
  p.residual = has_res ? epilogue.residual.data() : nullptr;
  p.ldr = has_res ? epilogue.residual.stride(0) : 0;
  // Scratch: a copy of a strided A, then the partial sums of a depth-blocked product.
  const bool copy_a = !(a.stride(1) == 1 || k <= 1);
  const Index a_floats = copy_a ? (m * k + 15) / 16 * 16 : 0;
  const Index part_floats = k > detail::kGemmF32DepthBlockAbove ? m * b.panels() * 16 : 0;
  Tensor<float, 1> temp;
  float* scratch = nullptr;
  if (a_floats + part_floats > 0)
    scratch = workspace != nullptr ? workspace->get(a_floats + part_floats)
                                   : (temp = Tensor<float, 1>({a_floats + part_floats})).data();
  if (part_floats > 0) {
    p.partial = scratch + a_floats;
    p.ldp = b.panels() * 16;
  }
  if (!copy_a) {
    p.a = a.data();
    p.lda = a.stride(0);
  } else {
    float* dst = scratch;
    for (Index i = 0; i < m; ++i)
      for (Index j = 0; j < k; ++j) dst[i * k + j] = a.data()[i * a.stride(0) + j * a.stride(1)];
    p.a = dst;
    p.lda = k;
  }
  auto& pol = policy;
  if constexpr (std::is_same_v<Arch, arch::Auto>) {
    arch::dispatch<Native>(arch::best_arch<Native>(),
                           [&](auto tag) { detail::gemm_f32_run(tag, p, pol); });
  } else {
    detail::gemm_f32_run(Arch{}, p, pol);
  }
}

template <class Arch = arch::Auto, class Native = arch::XsimdNative, class Policy = Sequential>
void gemm_f32(TensorView<const float, 2> a, const PackedWeightsF32& b, TensorView<float, 2> c,
              const GemmF32Epilogue& epilogue = {}, Policy&& policy = Policy{},
              GemmF32Workspace* workspace = nullptr) {
  gemm_f32<Arch, Native>(a, b.view(), c, epilogue, std::forward<Policy>(policy), workspace);
}

}  // namespace vitc::kernels
