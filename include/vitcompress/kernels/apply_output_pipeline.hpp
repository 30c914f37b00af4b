// SPDX-License-Identifier: Apache-2.0
#pragma once
// apply_output_pipeline: the GEMMs' output stages (kernels/output_stage.hpp) applied to int32
// accumulators that were not produced by one GEMM call.
//
// Why: some integer products are sums of several GEMMs. The log2 attention of engine::IntViT
// multiplies V by probabilities 2^(15−code), split into a high and a low byte so that each half is
// a uint8 operand; the two int32 products are combined (256·hi + lo) and only then requantized.
// This applies the same fused pipeline (bias, fixed-point requantization, zero point, clamp,
// narrowing or dequantization) the GEMM would have applied, with the same SIMD evaluators, so the
// result equals eval_pipeline on every element bit for bit.
//
//   out[i][j] = eval_pipeline(pipeline, acc[i][j], j)      (column j is the output channel)
//
// Paths (kernels/arch.hpp): Scalar and Xsimd<A> evaluate element by element (the xsimd GEMMs do
// the same); Avx2 and Avx512Vnni use the 8- and 16-column tile evaluators of
// detail/output_stage_simd.hpp. Throws ShapeError when the views differ in shape, ArgumentError
// for a column stride other than 1, a stage that does not cover the columns, or a forced path
// that is not available.

#include <cstdint>
#include <string>
#include <type_traits>

#include "vitcompress/core/error.hpp"
#include "vitcompress/core/tensor.hpp"
#include "vitcompress/kernels/arch.hpp"
#include "vitcompress/kernels/detail/gemm_int8_common.hpp"
#include "vitcompress/kernels/detail/output_stage_simd.hpp"
#include "vitcompress/kernels/output_stage.hpp"

namespace vitc::kernels {

namespace detail {

template <class Pipeline, class OutT>
void apply_output_pipeline_rows(arch::Scalar, const Pipeline& pipeline, const std::int32_t* acc,
                                Index lda, Index rows, Index cols, OutT* out, Index ldo) {
  for (Index r = 0; r < rows; ++r)
    for (Index j = 0; j < cols; ++j)
      out[r * ldo + j] = eval_pipeline(pipeline, acc[r * lda + j], j);
}

template <class A, class Pipeline, class OutT>
void apply_output_pipeline_rows(arch::Xsimd<A>, const Pipeline& pipeline, const std::int32_t* acc,
                                Index lda, Index rows, Index cols, OutT* out, Index ldo) {
  for (Index r = 0; r < rows; ++r)
    apply_pipeline_row(pipeline, acc + r * lda, 0, cols, out + r * ldo);
}

#if VITC_HAVE_X86_TARGET_KERNELS
template <class Pipeline, class OutT>
VITC_TARGET_AVX2 void apply_output_pipeline_rows(arch::Avx2, const Pipeline& pipeline,
                                                 const std::int32_t* acc, Index lda, Index rows,
                                                 Index cols, OutT* out, Index ldo) {
  apply_pipeline_tile_256(pipeline, acc, lda, rows, 0, cols, out, ldo);
}

template <class Pipeline, class OutT>
VITC_TARGET_AVX512VNNI void apply_output_pipeline_rows(arch::Avx512Vnni, const Pipeline& pipeline,
                                                       const std::int32_t* acc, Index lda,
                                                       Index rows, Index cols, OutT* out,
                                                       Index ldo) {
  apply_pipeline_tile_512(pipeline, acc, lda, rows, 0, cols, out, ldo);
}
#endif

}  // namespace detail

// out = pipeline(acc) element by element; out's element type is the pipeline's output type.
template <class Arch = arch::Auto, class Native = arch::XsimdNative, OutputPipeline Pipeline,
          class OutT>
void apply_output_pipeline(const Pipeline& pipeline, TensorView<const std::int32_t, 2> acc,
                           TensorView<OutT, 2> out) {
  static_assert(std::is_same_v<OutT, pipeline_output_t<Pipeline>>,
                "apply_output_pipeline: out's element type must be the pipeline's output type");
  const Index rows = acc.extent(0), cols = acc.extent(1);
  if (out.extent(0) != rows || out.extent(1) != cols)
    VITC_THROW(ShapeError("apply_output_pipeline: out is " +
                          vitc::detail::shape_string(out.shape()) + " but acc is " +
                          vitc::detail::shape_string(acc.shape())));
  if (cols > 1 && rows > 0 && (acc.stride(1) != 1 || out.stride(1) != 1))
    VITC_THROW(ArgumentError("apply_output_pipeline: acc and out must have column stride 1"));
  validate_pipeline(pipeline, cols);
  if (!arch::runnable<Arch>())
    VITC_THROW(ArgumentError("apply_output_pipeline: the forced path '" + std::string(Arch::kName) +
                             "' is not available on this build or CPU"));
  if (rows == 0 || cols == 0) return;
  auto run = [&](auto tag) {
    detail::apply_output_pipeline_rows(tag, pipeline, acc.data(), acc.stride(0), rows, cols,
                                       out.data(), out.stride(0));
  };
  if constexpr (std::is_same_v<Arch, arch::Auto>)
    arch::dispatch<Native>(arch::best_arch<Native>(), run);
  else
    run(Arch{});
}

}  // namespace vitc::kernels
