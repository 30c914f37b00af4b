// SPDX-License-Identifier: Apache-2.0
#pragma once
// The policies of engine::IntViT: which kernel computes each stage of the integer ViT.
//
// Why policies: the integer engine is one composition of kernels (kernels/), and each stage has
// variants with different speed/accuracy trade-offs. They are template parameters of IntViT, not
// flags tested per layer, so every combination compiles to straight calls:
//
//   IntViT<Gemm, Softmax, Norm, Gelu>
//     Gemm     gemm::Int8<Arch>         integer GEMMs (int8, and 4-bit for w4a8 layers) on path
//                                       Arch (kernels/arch.hpp: arch::Auto picks
//                                       the fastest, or VITC_ARCH's, once when the engine is
//                                       built; arch::Scalar, XsimdNative, Avx2,
//                                       Avx512Vnni force one). The same Arch is used by every
//                                       kernel of the engine (LayerNorm, softmax, GELU), so one
//                                       template argument forces one whole path; all paths give
//                                       bit-identical logits.
//     Softmax  softmax::IntSoftmax<Exp> Int-2^n-Softmax of kernels/softmax_int.hpp with 8-bit
//                                       linear probabilities (scale 1/255); Exp = kernels::PolyExp
//                                       (I-BERT's i-exp, the more accurate, default) or
//                                       kernels::ShiftExp (I-ViT's Shiftmax).
//     Norm     norm::IntLayerNorm       kernels/layernorm_int.hpp (the only variant).
//     Gelu     act::TableGelu (default) GELU of the fc1 output requantized to int16 over the
//                                       range where its code changes, by a 2^16-entry table of
//                                       output codes computed once from the exact GELU
//                                       (engine/detail/gelu_table.hpp): at run time one
//                                       requantization and one table lookup per value (a load;
//                                       on AVX-512 VBMI a lookup by buckets of the table's
//                                       steps, engine/detail/bucket_table.hpp, else a search
//                                       over them, engine/detail/step_table.hpp; same codes),
//                                       and the fc2 input codes equal the fake-quant
//                                       simulation's but at rounding ties (integer at run time).
//              act::IGelu, act::ShiftGelu  kernels/gelu_int.hpp (I-BERT's I-GELU, I-ViT's
//                                       ShiftGELU) on the int32 fc1 output; their output is int8
//                                       symmetric, so the fc2 input gets the symmetric scale
//                                       max(|lo|, |hi|)/127 of the calibrated fc2-input range
//                                       instead of its asymmetric 8-bit grid: one bit coarser
//                                       than the simulation (see int_vit.hpp, "Gaps").

#include <concepts>
#include <type_traits>

#include "vitcompress/kernels/arch.hpp"
#include "vitcompress/kernels/detail/gelu_int_types.hpp"
#include "vitcompress/kernels/detail/softmax_int_types.hpp"

namespace vitc::engine {

namespace gemm {
// int8 GEMMs (and every other kernel of the engine) on path Arch.
template <class Arch = kernels::arch::Auto>
struct Int8 {
  using arch = Arch;
};
}  // namespace gemm

namespace softmax {
template <class Exp = kernels::PolyExp>
struct IntSoftmax {
  using exp = Exp;
};
using IExp = IntSoftmax<kernels::PolyExp>;
using Shiftmax = IntSoftmax<kernels::ShiftExp>;
}  // namespace softmax

namespace norm {
struct IntLayerNorm {};
}  // namespace norm

namespace act {
struct TableGelu {
  static constexpr bool kTable = true;
};
struct IGelu {
  static constexpr bool kTable = false;
  using kernel = kernels::IGelu;
};
struct ShiftGelu {
  static constexpr bool kTable = false;
  using kernel = kernels::ShiftGelu;
};
}  // namespace act

template <class P>
concept GemmPolicy = requires {
  typename P::arch;
};
template <class P>
concept SoftmaxPolicy = requires {
  typename P::exp;
};
template <class P>
concept NormPolicy = std::is_same_v<P, norm::IntLayerNorm>;
template <class P>
concept GeluPolicy = requires {
  { P::kTable } -> std::convertible_to<bool>;
};

}  // namespace vitc::engine
