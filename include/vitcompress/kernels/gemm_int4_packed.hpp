// SPDX-License-Identifier: Apache-2.0
#pragma once
// 4-bit weight GEMM: int8/uint8 activations × signed 4-bit weights packed two per byte
// (kernels/packed_weights_int4.hpp), nibble unpacking fused into the int8 dot product.
//
// Why: at M = 1 (one token, streaming) a linear layer reads K·N weight bytes for K·N multiply-adds
// and runs at memory speed; 4-bit weights halve those bytes. At M = 197 it is compute-bound and
// the unpack (one AND, or a shift and an AND, per 64 weight bytes, shared by the tile's rows) must
// cost little next to the int8 path it mirrors.
//
// Two forms, chosen by how the weights were quantized:
//
//   gemm_int4(a, za, w, pipeline, c)             per-output-channel weights (group_size() == 0):
//       C[i][j] = pipeline( Σ_k (A[i][k] − za) · w[k][j] , j )
//     exact int32 accumulation and the same output stages as gemm_int8 (kernels/output_stage.hpp);
//     the weight scales are folded by the caller into the pipeline (requantize or dequantize).
//
//   gemm_int4(a, za, w, pipeline, c)             integer groups (with_group_multipliers):
//       C[i][j] = pipeline( Σ_g m(g, j)·P_g[i][j] , j )     (exact int32, P_g as below)
//     the caller folds one step per column into the pipeline (quant/group_scales.hpp);
//
//   gemm_int4_grouped(a, za, a_scale, w, bias, c) per-group weights (group_size() = G):
//       P_g[i][j] = Σ_{k in group g} (A[i][k] − za) · w[k][j]            (exact int32)
//       S = 0;  for g = 0, 1, ...:  S = fma(float(P_g), scale(g, j), S)   (fused, in this order)
//       C[i][j] = fma(S, a_scale, bias[j])   (bias 0 when empty),  C float
//     every path evaluates these float operations identically, so results are bit-exact too.
//
// Operands and limits as in gemm_int8: A any strides, a_zero_point in A's type range, C column
// stride 1, K <= 65536. Paths: arch::Scalar (the definition), arch::Xsimd<A>, arch::Avx2
// (vpmaddubsw on nibbles, which cannot saturate), arch::Avx512Vnni (vpdpbusd with the nibbles as
// the unsigned operand; integer groups run the AVX2 tiles); arch::Auto dispatches at run time
// (VITC_ARCH honoured). `policy`
// splits column panels across threads; the result does not depend on the thread count.
//
// Errors: ShapeError for mismatched shapes; ArgumentError for a zero point out of range, the wrong
// form for the weights' grouping, a bias of the wrong length, a C column stride other than 1, or
// a forced path this CPU cannot run.

#include <cstdint>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "vitcompress/core/error.hpp"
#include "vitcompress/core/parallel_for.hpp"
#include "vitcompress/core/tensor.hpp"
#include "vitcompress/kernels/arch.hpp"
#include "vitcompress/kernels/detail/gemm_int4_avx2.hpp"
#include "vitcompress/kernels/detail/gemm_int4_avx512vnni.hpp"
#include "vitcompress/kernels/detail/gemm_int4_common.hpp"
#include "vitcompress/kernels/detail/gemm_int4_xsimd.hpp"
#include "vitcompress/kernels/gemm_int8.hpp"
#include "vitcompress/kernels/output_stage.hpp"
#include "vitcompress/kernels/packed_weights_int4.hpp"

namespace vitc::kernels {

namespace detail {
template <class Arch, class Native, class AT, class OutT, class Pipeline, class Policy>
void gemm_int4_entry(const char* fn, TensorView<AT, 2> a, std::int32_t a_zero_point,
                     const PackedWeightsInt4& b, const Pipeline& pipeline, TensorView<OutT, 2> c,
                     Policy& policy, GemmWorkspace* workspace) {
  using A = std::remove_const_t<AT>;
  static_assert(std::is_same_v<A, std::int8_t> || std::is_same_v<A, std::uint8_t>,
                "A must hold int8_t or uint8_t");
  const Index m = a.extent(0), k = a.extent(1), n = b.cols();
  const std::string f(fn);
  if (k != b.depth())
    VITC_THROW(ShapeError(f + ": A has " + std::to_string(k) +
                          " columns but the weights have depth " + std::to_string(b.depth())));
  if (c.extent(0) != m || c.extent(1) != n)
    VITC_THROW(ShapeError(f + ": C is " + vitc::detail::shape_string(c.shape()) + ", expected [" +
                          std::to_string(m) + ", " + std::to_string(n) + "]"));
  if (n > 1 && m > 0 && c.stride(1) != 1)
    VITC_THROW(ArgumentError(f + ": C must have column stride 1"));
  constexpr std::int32_t lo = std::is_same_v<A, std::int8_t> ? -128 : 0;
  constexpr std::int32_t hi = std::is_same_v<A, std::int8_t> ? 127 : 255;
  if (a_zero_point < lo || a_zero_point > hi)
    VITC_THROW(ArgumentError(f + ": a_zero_point = " + std::to_string(a_zero_point) +
                             " is outside the range of A's element type"));
  if (!arch::runnable<Arch>())
    VITC_THROW(ArgumentError(f + ": the forced path '" + std::string(Arch::kName) +
                             "' is not available on this build or CPU"));
  if (m == 0 || n == 0) return;
  GemmInt4Problem<A, OutT> p;
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
  if constexpr (std::is_same_v<Arch, arch::Auto>) {
    arch::dispatch<Native>(arch::best_arch<Native>(),
                           [&](auto tag) { gemm_int4_run(tag, p, pipeline, policy); });
  } else {
    gemm_int4_run(Arch{}, p, pipeline, policy);
  }
}
}  // namespace detail

// Per-channel 4-bit weights: C = pipeline((A − a_zero_point)·W), exact int32 accumulators.
template <class Arch = arch::Auto, class Native = arch::XsimdNative, class AT,
          OutputPipeline Pipeline, class OutT, class Policy = Sequential>
void gemm_int4(TensorView<AT, 2> a, std::int32_t a_zero_point, const PackedWeightsInt4& w,
               const Pipeline& pipeline, TensorView<OutT, 2> c, Policy&& policy = Policy{},
               GemmWorkspace* workspace = nullptr) {
  static_assert(std::is_same_v<pipeline_output_t<Pipeline>, OutT>,
                "gemm_int4: C's element type must be the output pipeline's result type");
  if (w.group_size() != 0 && !w.integer_groups())
    VITC_THROW(ArgumentError("gemm_int4: the weights have float per-group scales (group_size = " +
                             std::to_string(w.group_size()) + "); use gemm_int4_grouped"));
  validate_pipeline(pipeline, w.cols());
  auto& pol = policy;
  detail::gemm_int4_entry<Arch, Native>("gemm_int4", a, a_zero_point, w, pipeline, c, pol,
                                        workspace);
}

template <class Arch = arch::Auto, class Native = arch::XsimdNative, class AT,
          class Policy = Sequential>
void gemm_int4(TensorView<AT, 2> a, std::int32_t a_zero_point, const PackedWeightsInt4& w,
               TensorView<std::int32_t, 2> c, Policy&& policy = Policy{},
               GemmWorkspace* workspace = nullptr) {
  gemm_int4<Arch, Native>(a, a_zero_point, w, RawInt32{}, c, std::forward<Policy>(policy),
                          workspace);
}

// Per-group 4-bit weights: float C (see the header comment for the exact evaluation).
template <class Arch = arch::Auto, class Native = arch::XsimdNative, class AT,
          class Policy = Sequential>
void gemm_int4_grouped(TensorView<AT, 2> a, std::int32_t a_zero_point, float a_scale,
                       const PackedWeightsInt4& w, std::span<const float> bias,
                       TensorView<float, 2> c, Policy&& policy = Policy{},
                       GemmWorkspace* workspace = nullptr) {
  if (w.group_size() == 0 || w.integer_groups())
    VITC_THROW(
        ArgumentError(std::string("gemm_int4_grouped: the weights have ") +
                      (w.integer_groups() ? "integer group multipliers" : "per-channel scales") +
                      "; use gemm_int4 with a dequantize or requantize stage"));
  if (!bias.empty() && static_cast<Index>(bias.size()) != w.cols())
    VITC_THROW(ArgumentError("gemm_int4_grouped: bias has " + std::to_string(bias.size()) +
                             " values for " + std::to_string(w.cols()) + " columns"));
  std::vector<float> padded;
  detail::Int4GroupedEpilogue epi{a_scale, nullptr};
  if (!bias.empty()) {
    padded.assign(static_cast<std::size_t>(w.panels() * PackedWeightsInt4::kPanel), 0.0f);
    std::copy(bias.begin(), bias.end(), padded.begin());
    epi.bias = padded.data();
  }
  auto& pol = policy;
  detail::gemm_int4_entry<Arch, Native>("gemm_int4_grouped", a, a_zero_point, w, epi, c, pol,
                                        workspace);
}

}  // namespace vitc::kernels
