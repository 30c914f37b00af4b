// SPDX-License-Identifier: Apache-2.0
#pragma once
// The scalar reference of the int8 GEMM: the definition every other path equals bit for bit.
//   C[i][j] = pipeline(Σ_k (A[i][k] − a_zero_point) · B[k][j], j), int32 accumulation.

#include <algorithm>

#include "vitcompress/kernels/arch.hpp"
#include "vitcompress/kernels/detail/gemm_int8_common.hpp"

namespace vitc::kernels::detail {

template <class AT, class OutT, class Pipeline, class Policy>
void gemm_int8_run(arch::Scalar, const GemmInt8Problem<AT, OutT>& p, const Pipeline& pipeline,
                   Policy& policy) {
  constexpr Index kPanel = PackedWeightsInt8::kPanel;
  policy.parallel_for(p.b->panels(), 1, [&](Index p0, Index p1) {
    const Index j_end = std::min(p.n, p1 * kPanel);
    for (Index i = 0; i < p.m; ++i)
      for (Index j = p0 * kPanel; j < j_end; ++j)
        p.c[i * p.c_row_stride + j] = eval_pipeline(pipeline, reference_accumulator(p, i, j), j);
  });
}

}  // namespace vitc::kernels::detail
