// SPDX-License-Identifier: Apache-2.0
#pragma once
// engine::IntViT: a w8a8- or w4a8-quantized ViT run end to end in integer arithmetic.
//
// Why: the fake-quant simulation (quant/fake_quant_vit.hpp) says what accuracy a quantized ViT
// keeps; this engine is that model deployed. Between the quantization of the input patches and the
// dequantization of the logits every value is an integer code and every operation an integer
// kernel (kernels/): nothing is float inside, so the speed of int8 arithmetic is real, and so is
// the accuracy the simulation promised (up to the integer approximations listed under "Gaps").
//
// Built from a calibrated FakeQuantViT (weights quantized, activations calibrated) of the w8a8 or
// w4a8 shape (QuantConfig::named("w8a8") / named("w4a8"), or any custom config with the same
// point kinds):
//   weights        Symmetric 4- to 8-bit, per output channel (or per tensor), chosen per
//                  layer: 4-bit layers run kernels::gemm_int4 on weights packed two per byte,
//                  their scales folded into the same per-channel requantization as int8's;
//                  or per group with integer group scales (group_scale_bits, w4a8-g32;
//                  quant/group_scales.hpp): 4-bit codes in groups of a multiple of 8 run the
//                  4-bit kernel's integer groups (Σ_g m·P_g in int32), other widths run as int8
//                  codes m·w of a per-channel matrix when those fit int8;
//   activations    Asymmetric 8-bit per tensor at patch_input, qkv_input, query, proj_input,
//                  fc1_input, fc2_input, head_input; Symmetric 4- to 8-bit per tensor at key,
//                  value (the same for both; w7a8 has 7: the B operands of Q·Kᵀ and P·V then
//                  take AVX2's unwidened kernel, as its weights do);
//                  Asymmetric 8-bit (linear) or Log2 with 1 to 4 bits (FQ-ViT's log2 attention
//                  map, w8a8-log2attn / w4a8-log2attn) at attention_probs;
//   residual       Asymmetric 8-bit per tensor, with or without FQ-ViT's power-of-two factors
//                  (PTF), at block_input, mlp_residual, final_norm_input.
// Anything else (fp16, float per-group weight scales, 4-bit activations, log2 with more bits)
// throws ArgumentError naming the point: those engine paths are not built. (Float group scales:
// each group's int32 partial sum would need its own fixed-point ratio s_g/s_ref before the sum;
// the 4-bit kernel's grouped form sums them in float.)
//
// The computation, per image (T tokens, D channels; codes q at scale s and zero point z mean
// s·(q − z); the residual stream is stored as int16 r_c = q_c − z, channel c at scale s·2^α_c):
//   patches   float → uint8 codes (patch_input), the one float step at the input
//   x0        int8 GEMM; (acc·s_p·s_w + bias + pos_embed) requantized to block 0's block_input
//             codes in one rounding (detail::Rescale); class token row precomputed
//   block l   Int-LayerNorm(r) → qkv_input codes (int8, see "LayerNorm output" below)
//             GEMM → Q codes (uint8, asymmetric) and K, V codes (int8, symmetric), fused
//             output pipelines (bias, per-channel fixed-point multiplier, zero point, clamp)
//             Q·Kᵀ exact in int32 (scale s_q·s_k/√d), integer softmax → uint8 P (scale 1/255),
//             or log2 codes c (P = 2^−c) turned into uint8 weights 2^(L−1−c) (L = 2^b levels;
//             for L = 16, a high and a low byte: two GEMMs, combined exactly, see log2_pv)
//             P·V exact in int32, fixed-point requantization to proj_input codes
//             (both through kernels::gemm_int8 with activations on both sides: per (image,
//             head), the head's K is packed as the B operand Kᵀ and V as B, a copy of
//             t·d_head bytes, PackedWeightsInt8::repack; or per image, all heads at once
//             against block-diagonal Kᵀ and V, for short sequences (HeadGrouping); P·V's
//             requantization is the GEMM's fused output pipeline)
//             proj GEMM (int32); r ← requantize(acc·s + r_in·s_in + bias) to mlp_residual codes
//             Int-LayerNorm → fc1_input codes; fc1 GEMM + GELU policy → fc2_input codes
//             fc2 GEMM (int32); r ← requantize(acc·s + r·s_mid + bias) to the next residual codes
//             (the last block computes attention, proj and MLP for the class tokens only)
//   head      Int-LayerNorm of the class tokens → head_input codes; GEMM, bias, per-channel
//             dequantization to float logits.
// LayerNorm output: the integer LayerNorm writes int8 codes at a scale S; an asymmetric 8-bit
// point (S, z) is reproduced exactly by folding (z − 128)·S into β, so the int8 output equals the
// uint8 code minus 128, and the following GEMM takes it as int8 activations with zero point
// z − 128.
//
// Gaps to the fake-quant simulation of the same configuration (which keeps softmax, LayerNorm and
// GELU in float, as PTQ4ViT and RepQ-ViT do):
//   - softmax: the integer exponential (kernels/softmax_int.hpp: i-exp within 0.0035 of float at
//     the score scales of a ViT, Shiftmax within 0.02), and the probabilities' scale is 1/255
//     (the kernel's) rather than the calibrated max/255;
//   - log2 attention: the kernel rounds the level at 1.5·2^k (FQ-ViT's integer log_round), the
//     simulation at √2·2^k, and its levels are relative to 1, not to the calibrated first level;
//     on the shipped model 3.5% of predictions differ, in both directions (top-1 within 0.01
//     points on the 10000 test images, README);
//   - LayerNorm: within 1.1 output steps of the float LayerNorm (kernels/layernorm_int.hpp);
//   - GELU: TableGelu evaluates the float GELU exactly on the fc1 output requantized to 16 bits
//     (over [−L, U], where its code changes: ≥ 100 steps per output step for output ranges of 2
//     or more, detail/gelu_table.hpp), so its codes differ only at rounding ties; IGelu and
//     ShiftGelu add their approximation error and a symmetric int8 fc2 input (one bit coarser);
//   - requantizations round the exact integer sums once (fixed point to 2^−30), where the
//     simulation rounds float sums: codes can differ by one at near-ties.
// tests/engine measures the agreement; the top-1 difference on Fashion-MNIST is in the README.
//
// Run time: weights are quantized and packed once at construction, every buffer (including the
// GEMMs' scratch, a kernels::GemmWorkspace reserved for the largest call, and one per attention
// chunk) is allocated once for batches up to max_batch, and run() allocates nothing and does no
// float arithmetic between the input quantization and the logit dequantization. Threads: the
// ThreadPool given splits GEMM columns, LayerNorm rows and (image, head) attention items; results
// do not depend on the number of threads. One IntViT is not safe to run from two threads at once
// (its buffers). run(images, logits, profile) also times every stage (engine/stage_profile.hpp).
//
// Errors: an uncalibrated or unsupported FakeQuantViT throws ArgumentError naming the point;
// run() throws ShapeError for images or logits of the wrong shape, ArgumentError for a batch
// above max_batch or a non-finite input value, before any computation.

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "vitcompress/core/error.hpp"
#include "vitcompress/core/parallel_for.hpp"
#include "vitcompress/core/tensor.hpp"
#include "vitcompress/engine/detail/bucket_table.hpp"
#include "vitcompress/engine/detail/gelu_table.hpp"
#include "vitcompress/engine/detail/int_vit_ops.hpp"
#include "vitcompress/engine/detail/step_table.hpp"
#include "vitcompress/engine/policies.hpp"
#include "vitcompress/engine/stage_profile.hpp"
#include "vitcompress/kernels/apply_output_pipeline.hpp"
#include "vitcompress/kernels/fixed_point.hpp"
#include "vitcompress/kernels/gelu_int.hpp"
#include "vitcompress/kernels/gemm_int4_packed.hpp"
#include "vitcompress/kernels/gemm_int8.hpp"
#include "vitcompress/kernels/layernorm_int.hpp"
#include "vitcompress/kernels/output_stage.hpp"
#include "vitcompress/kernels/packed_weights_int4.hpp"
#include "vitcompress/kernels/packed_weights_int8.hpp"
#include "vitcompress/kernels/softmax_int.hpp"
#include "vitcompress/model/vit_config.hpp"
#include "vitcompress/model/vit_hooks.hpp"
#include "vitcompress/model/vit_weights.hpp"
#include "vitcompress/quant/fake_quant_vit.hpp"
#include "vitcompress/quant/group_scales.hpp"
#include "vitcompress/quant/requantize.hpp"

namespace vitc::engine {

namespace detail {

// An asymmetric 8-bit per-tensor point.
struct AsymPoint {
  float scale = 1.0f;
  std::int32_t zero_point = 0;
};

// A residual-stream point: base scale, zero point and α_c per channel (all 0 without PTF).
struct ResidualPoint {
  float scale = 1.0f;
  std::int32_t zero_point = 0;
  std::vector<std::uint8_t> alpha;
  [[nodiscard]] double channel_scale(std::size_t c) const {
    return std::ldexp(static_cast<double>(scale), alpha[c]);
  }
};

inline const quant::ActivationPoint& ready_point(const quant::FakeQuantViT& fq,
                                                 model::HookSite site, int block) {
  const quant::ActivationPoint& p = fq.hooks().point(site, block);
  if (!p.ready || p.params.scales.empty())
    VITC_THROW(ArgumentError("IntViT: activation point " + p.name +
                             " is not calibrated (run FakeQuantViT::calibrate first)"));
  return p;
}

inline void require_scheme(const quant::ActivationPoint& p, quant::SchemeKind kind,
                           const char* want, int min_bits = 8) {
  const auto& s = p.spec;
  if (s.scheme.kind != kind || s.scheme.bits < min_bits || s.scheme.bits > 8 ||
      (!s.ptf && s.granularity.kind != quant::GranularityKind::kTensor))
    VITC_THROW(ArgumentError("IntViT: activation point " + p.name + " must be " + want +
                             " (this engine runs w8a8 configurations)"));
}

inline AsymPoint asym_point(const quant::FakeQuantViT& fq, model::HookSite site, int block) {
  const auto& p = ready_point(fq, site, block);
  require_scheme(p, quant::SchemeKind::kAsymmetric, "asymmetric 8-bit per tensor");
  if (p.spec.ptf)
    VITC_THROW(ArgumentError("IntViT: activation point " + p.name +
                             ": power-of-two factors are supported on residual points only"));
  return {p.params.scales[0], p.params.zero_points[0]};
}

// A symmetric per-tensor point of 4 to 8 bits (key, value): codes in [−max_code, max_code].
struct SymPoint {
  float scale = 1.0f;
  std::int32_t max_code = 127;
};

inline SymPoint sym_point(const quant::FakeQuantViT& fq, model::HookSite site, int block) {
  const auto& p = ready_point(fq, site, block);
  require_scheme(p, quant::SchemeKind::kSymmetric, "symmetric 4- to 8-bit per tensor", 4);
  return {p.params.scales[0], (std::int32_t{1} << (p.spec.scheme.bits - 1)) - 1};
}

inline ResidualPoint residual_point(const quant::FakeQuantViT& fq, model::HookSite site, int block,
                                    Index channels) {
  const auto& p = ready_point(fq, site, block);
  require_scheme(p, quant::SchemeKind::kAsymmetric, "asymmetric 8-bit (optionally with PTF)");
  ResidualPoint r;
  if (p.spec.ptf) {
    if (!p.ptf || static_cast<Index>(p.ptf->alpha.size()) != channels)
      VITC_THROW(ArgumentError("IntViT: activation point " + p.name +
                               ": power-of-two factors missing or of the wrong size"));
    r.scale = p.ptf->base_scale;
    r.zero_point = p.ptf->zero_point;
    r.alpha = p.ptf->alpha;
  } else {
    r.scale = p.params.scales[0];
    r.zero_point = p.params.zero_points[0];
    r.alpha.assign(static_cast<std::size_t>(channels), 0);
  }
  return r;
}

// A quantized weight: codes [out, in] (8-bit, or 4-bit values in [−8, 7]) and one scale per
// output row; for 4-bit integer groups also the group size and the multiples m [row][group]
// (the row's scale is then the step σ of quant/group_scales.hpp).
struct QuantWeight {
  Tensor<std::int8_t, 2> codes;
  std::vector<float> scales;
  int bits = 8;
  Index group_size = 0;
  std::vector<std::int32_t> multipliers;
};

// The packed B operand of one linear layer: int8, or signed 4-bit two per byte (per-channel
// scales, or integer groups; the caller folds the per-row scales into its output pipeline as for
// int8).
struct LinearWeights {
  kernels::PackedWeightsInt8 w8;
  kernels::PackedWeightsInt4 w4;
  bool int4 = false;

  // Output rows [r0, r1) of q (all of them when r1 < 0).
  static LinearWeights pack(const QuantWeight& q, Index r0 = 0, Index r1 = -1) {
    if (r1 < 0) r1 = q.codes.extent(0);
    const TensorView<const std::int8_t, 2> b = q.codes.cview().slice(0, r0, r1).transposed();
    const Index n = r1 - r0;
    LinearWeights w;
    w.int4 = q.bits == 4;
    if (q.group_size > 0) {
      const Index per_row = (b.extent(0) + q.group_size - 1) / q.group_size;
      std::vector<std::int32_t> m(static_cast<std::size_t>(per_row * n));  // group-major
      for (Index r = 0; r < n; ++r)
        for (Index g = 0; g < per_row; ++g)
          m[static_cast<std::size_t>(g * n + r)] =
              q.multipliers[static_cast<std::size_t>((r0 + r) * per_row + g)];
      w.w4 = kernels::PackedWeightsInt4::with_group_multipliers(b, m, q.group_size);
    } else if (w.int4) {
      w.w4 = kernels::PackedWeightsInt4(
          b, std::span<const float>(q.scales.data() + r0, static_cast<std::size_t>(n)), 0);
    } else {
      w.w8 = kernels::PackedWeightsInt8(b);
    }
    return w;
  }
  [[nodiscard]] Index bytes() const noexcept { return int4 ? w4.bytes() : w8.bytes(); }
};

inline QuantWeight quantize_weight(const quant::FakeQuantViT& fq, quant::WeightKind kind,
                                   int block) {
  const std::string name = quant::weight_name(kind, block);
  const quant::WeightPoint* wp = nullptr;
  for (const auto& w : fq.weight_points())
    if (w.name == name) wp = &w;
  if (wp == nullptr) VITC_THROW(ArgumentError("IntViT: no weight point " + name));
  const auto& s = wp->spec;
  const bool per_row =
      s.granularity.kind == quant::GranularityKind::kChannel && s.granularity.axis == 0;
  const bool two_level =
      s.granularity.kind == quant::GranularityKind::kGroup && s.group_scale_bits > 0;
  if (s.scheme.kind != quant::SchemeKind::kSymmetric || s.scheme.bits < 4 || s.scheme.bits > 8 ||
      !(per_row || two_level || s.granularity.kind == quant::GranularityKind::kTensor))
    VITC_THROW(ArgumentError("IntViT: weight " + name +
                             " must be symmetric with 4 to 8 bits, per output channel, per "
                             "tensor, or per group with integer group scales (group_scale_bits; "
                             "float group scales are not in the engine)"));
  if (!wp->ready) VITC_THROW(ArgumentError("IntViT: weight " + name + " is not quantized"));
  const auto view = quant::FakeQuantViT::weight_view(fq.master_weights(), kind, block);
  const Index rows = view.extent(0), cols = view.extent(1);
  QuantWeight q;
  q.bits = s.scheme.bits;
  q.codes = Tensor<std::int8_t, 2>({rows, cols});
  quant::quantize<std::int8_t>(view, wp->params, q.codes.view(), name);
  q.scales.resize(static_cast<std::size_t>(rows));
  if (two_level) {
    // Σ_g σ·m_g·Σ_k w·a = σ·Σ_g m_g·P_g (quant/group_scales.hpp). 4-bit codes in groups of a
    // multiple of 8 take the 4-bit kernel's integer groups (half the bytes, and faster than
    // the int8 route on DeiT-tiny; README); other codes become one per-channel int8 matrix of
    // codes m·w with scale σ, when those fit int8.
    const auto split = quant::split_group_scales(wp->params, rows, s.group_scale_bits, name);
    const std::int32_t levels = quant::group_scale_levels(s.group_scale_bits);
    const Index g = s.granularity.group_size, per_row_groups = (cols + g - 1) / g;
    q.scales = split.row_scale;
    if (s.scheme.bits == 4 && g % kernels::PackedWeightsInt4::kKBlock == 0 &&
        std::int64_t{cols} * 2040 * levels <= std::numeric_limits<std::int32_t>::max()) {
      q.group_size = g;
      q.multipliers = split.multipliers;
      return q;
    }
    const std::int32_t widest = std::max(-s.scheme.qmin(), s.scheme.qmax()) * levels;
    if (widest <= 127) {
      for (Index r = 0; r < rows; ++r)
        for (Index c = 0; c < cols; ++c)
          q.codes(r, c) = static_cast<std::int8_t>(
              q.codes(r, c) *
              split.multipliers[static_cast<std::size_t>(r * per_row_groups + c / g)]);
      q.bits = 8;  // the products m·w are int8 codes
      return q;
    }
    VITC_THROW(ArgumentError("IntViT: weight " + name + ": " + std::to_string(s.scheme.bits) +
                             "-bit codes times group scale multiples up to " +
                             std::to_string(levels) + " reach " + std::to_string(widest) +
                             ", beyond int8, and only 4-bit codes in groups of a multiple of 8 "
                             "run the 4-bit kernel's integer groups"));
  }
  for (Index r = 0; r < rows; ++r)
    q.scales[static_cast<std::size_t>(r)] = wp->params.scales[per_row ? r : 0];
  return q;
}

inline std::vector<double> products(std::span<const float> w, double s) {
  std::vector<double> out(w.size());
  for (std::size_t i = 0; i < w.size(); ++i) out[i] = static_cast<double>(w[i]) * s;
  return out;
}

inline std::vector<double> to_double(std::span<const float> v) {
  return std::vector<double>(v.begin(), v.end());
}

// Layer norm parameters whose int8 output is the asymmetric code of `out` minus 128.
inline kernels::LayerNormParams layernorm_to_asym(const model::LayerNormWeights<float>& w,
                                                  const ResidualPoint& in, AsymPoint out,
                                                  double eps) {
  const Index d = w.weight.extent(0);
  std::vector<float> beta(static_cast<std::size_t>(d));
  for (Index c = 0; c < d; ++c)
    beta[static_cast<std::size_t>(c)] =
        static_cast<float>(double{w.bias(c)} + (out.zero_point - 128) * double{out.scale});
  return kernels::prepare_layernorm(std::span<const float>(w.weight.data(), d), beta, in.scale,
                                    out.scale, static_cast<float>(eps), in.alpha);
}

// The kernel policy of a GELU policy (IGelu for TableGelu, whose kernel is unused).
template <class G, class = void>
struct GeluKernelOf {
  using type = kernels::IGelu;
};
template <class G>
struct GeluKernelOf<G, std::void_t<typename G::kernel>> {
  using type = typename G::kernel;
};

}  // namespace detail

// How attention's Q·Kᵀ and P·V are cut into GEMMs (IntViT::set_head_grouping). Per head: one
// GEMM each per (image, head), the head's K and V packed as the B operand. All heads: one GEMM
// each per image, against block-diagonal Kᵀ and V (head h's keys in head h's rows and columns,
// zeros elsewhere): H times the multiply-adds, but one call, one packing and one softmax call
// instead of H. Auto groups heads when H·T <= kGroupedHeadsMaxColumns (short sequences, where
// each call's fixed cost outweighs its arithmetic: the shipped 17-token model), in as few equal
// groups as keep every thread of the engine busy (4 heads, batch 1, 2 threads: 2 groups of 2).
// The results are bit-identical: the zeros add nothing to the exact int32 products.
enum class HeadGrouping { kAuto, kPerHead, kAllHeads };
inline constexpr Index kGroupedHeadsMaxColumns = 128;

template <GemmPolicy Gemm = gemm::Int8<>, SoftmaxPolicy Softmax = softmax::IExp,
          NormPolicy Norm = norm::IntLayerNorm, GeluPolicy Gelu = act::TableGelu>
class IntViT {
 public:
  using Arch = typename Gemm::arch;
  using Exp = typename Softmax::exp;

  // Quantizes and packs the weights of a calibrated FakeQuantViT and allocates every buffer for
  // batches of up to max_batch images. `pool` (may be null: calling thread only) is used by run().
  explicit IntViT(const quant::FakeQuantViT& fq, Index max_batch = 1, ThreadPool* pool = nullptr)
      : config_(fq.master_weights().config), max_batch_(max_batch), pool_(pool) {
    if (max_batch < 1) VITC_THROW(ArgumentError("IntViT: max_batch must be >= 1"));
    if (fq.config().other_params != quant::SchemeKind::kNone)
      VITC_THROW(ArgumentError("IntViT: fp16 'other_params' are not supported"));
    build(fq);
    allocate();
    // The GELU table lookup reads the table's buckets with byte permutes (detail/bucket_table.hpp)
    // when the CPU also has AVX-512 VBMI, else searches its steps (detail/step_table.hpp), on
    // AVX-512 on the Avx512Vnni path, and on the Auto path when the CPU has it; exact either way
    // (both forms are checked against every table entry when they are built). The input
    // quantization and the residual rescaling have AVX-512 and AVX2 paths, chosen the same way
    // (tests/engine/test_quantize_input.cpp, test_rescale_row.cpp).
    if constexpr (std::is_same_v<Arch, kernels::arch::Avx512Vnni>)
      helper_arch_ = kernels::arch::ArchId::kAvx512Vnni;
    else if constexpr (std::is_same_v<Arch, kernels::arch::Avx2>)
      helper_arch_ = kernels::arch::ArchId::kAvx2;
    else if constexpr (std::is_same_v<Arch, kernels::arch::Auto>)
      helper_arch_ = kernels::arch::best_arch();
    vbmi_ = helper_arch_ == kernels::arch::ArchId::kAvx512Vnni && cpu_features().avx512vbmi;
  }

  [[nodiscard]] const model::ViTConfig& config() const noexcept { return config_; }
  [[nodiscard]] Index max_batch() const noexcept { return max_batch_; }
  [[nodiscard]] Index num_classes() const noexcept { return config_.num_classes; }
  void set_pool(ThreadPool* pool) noexcept { pool_ = pool; }
  // Chooses how attention is cut into GEMMs (HeadGrouping; default kAuto) and resizes the
  // attention buffers for it. Every choice gives the same logits.
  void set_head_grouping(HeadGrouping grouping) {
    grouping_ = grouping;
    allocate();
  }

  // Bytes of packed int8 weights (GEMM operands only).
  [[nodiscard]] Index weight_bytes() const noexcept {
    Index n = patch_w_.bytes() + head_w_.bytes();
    for (const Block& b : blocks_)
      n += b.wq.bytes() + b.wkv.bytes() + b.wproj.bytes() + b.wfc1.bytes() + b.wfc2.bytes();
    return n;
  }

  // logits [B, classes] of images [B, C, H, W] (normalized as for the float model), B <= max_batch.
  void run(TensorView<const float, 4> images, TensorView<float, 2> logits) {
    run_impl<false>(images, logits, nullptr);
  }
  // The same, adding the time of every stage to `profile` (engine/stage_profile.hpp; reset to this
  // model's depth when it has another). The plain run() compiles the timing out.
  void run(TensorView<const float, 4> images, TensorView<float, 2> logits, StageProfile& profile) {
    const int depth = static_cast<int>(config_.blocks.size());
    if (profile.blocks() != depth) profile.reset(depth);
    run_impl<true>(images, logits, &profile);
  }
  // Same as run(), under the name the evaluation loops use.
  void predict(TensorView<const float, 4> images, TensorView<float, 2> logits) {
    run(images, logits);
  }

 private:
  using QPipe =
      std::tuple<kernels::OutputBiasAdd, kernels::OutputRequantizePerChannel,
                 kernels::OutputAddZeroPoint, kernels::OutputSaturatingCast<std::uint8_t>>;
  using KvPipe = std::tuple<kernels::OutputBiasAdd, kernels::OutputRequantizePerChannel,
                            kernels::OutputClamp, kernels::OutputSaturatingCast<std::int8_t>>;
  using Fc1TablePipe =
      std::tuple<kernels::OutputBiasAdd, kernels::OutputRequantizePerChannel,
                 kernels::OutputAddZeroPoint, kernels::OutputSaturatingCast<std::int16_t>>;
  using Fc1KernelPipe = std::tuple<kernels::OutputBiasAdd, kernels::OutputRequantizePerChannel>;
  using HeadPipe = std::tuple<kernels::OutputBiasAdd, kernels::OutputDequantizePerChannel>;
  using PvPipe = std::tuple<kernels::OutputRequantize, kernels::OutputAddZeroPoint,
                            kernels::OutputSaturatingCast<std::uint8_t>>;
  using GeluKernel = typename detail::GeluKernelOf<Gelu>::type;

  struct Block {
    Index heads = 0, dqk = 0, dv = 0, hidden = 0;
    kernels::LayerNormParams ln1, ln2;
    detail::LinearWeights wq, wkv, wproj, wfc1, wfc2;
    quant::RequantParams rq_q, rq_kv, rq_fc1;
    std::int32_t ln1_zp = 0, ln2_zp = 0;  // GEMM zero points of the int8 LayerNorm outputs
    std::int32_t q_zp = 0, proj_zp = 0, fc2_zp = 0;
    std::int32_t kv_max = 127;  // K and V codes in [−kv_max, kv_max] (4- to 8-bit key / value)
    kernels::SoftmaxParams<Exp, kernels::LinearProb> softmax;
    std::optional<kernels::SoftmaxParams<Exp, kernels::Log2Prob>> softmax_log2;  // log2 attention
    // Log2 attention's 2^b levels (codes c, weights 2^(levels − 1 − c)); 0 for linear attention.
    [[nodiscard]] std::int32_t log2_levels() const noexcept {
      return softmax_log2 ? std::int32_t{1} << softmax_log2->out_bits : 0;
    }
    kernels::FixedPointMultiplier pv;
    detail::Rescale res_attn, res_mlp;
    std::vector<std::int8_t> gelu_table;  // TableGelu: 65536 entries, index code + 32768
    detail::StepTable gelu_steps;         // the same table by its steps (AVX-512 lookups)
    detail::BucketTable gelu_buckets;     // and by buckets of steps (AVX-512 VBMI lookups)
    std::optional<kernels::GeluParams<GeluKernel, std::int32_t>> gelu;
  };

  template <class F>
  void with_policy(F&& f) {
    if (pool_ != nullptr) {
      f(*pool_);
    } else {
      Sequential s;
      f(s);
    }
  }

  void check_io(const TensorView<const float, 4>& images, const TensorView<float, 2>& logits) {
    const ViTShape s = shape();
    const Index batch = images.extent(0);
    if (images.extent(1) != config_.in_channels || images.extent(2) != s.image ||
        images.extent(3) != s.image || batch < 1)
      VITC_THROW(ShapeError("IntViT: images: expected [B >= 1, " +
                            std::to_string(config_.in_channels) + ", " + std::to_string(s.image) +
                            ", " + std::to_string(s.image) + "], got " +
                            vitc::detail::shape_string(images.shape())));
    if (batch > max_batch_)
      VITC_THROW(ArgumentError("IntViT: batch of " + std::to_string(batch) +
                               " images exceeds max_batch = " + std::to_string(max_batch_)));
    if (logits.extent(0) != batch || logits.extent(1) != config_.num_classes ||
        (config_.num_classes > 1 && logits.stride(1) != 1))
      VITC_THROW(ShapeError("IntViT: logits: expected a row-contiguous [" + std::to_string(batch) +
                            ", " + std::to_string(config_.num_classes) + "] view, got " +
                            vitc::detail::shape_string(logits.shape())));
    for (Index b = 0; b < batch; ++b)
      for (Index c = 0; c < images.extent(1); ++c)
        for (Index y = 0; y < images.extent(2); ++y) {
          if (images.stride(3) == 1 && detail::all_finite(&images(b, c, y, 0), images.extent(3)))
            continue;  // the common case, checked without a branch per pixel
          for (Index x = 0; x < images.extent(3); ++x)
            if (!std::isfinite(images(b, c, y, x)))
              VITC_THROW(ArgumentError("IntViT: images(" + std::to_string(b) + ", " +
                                       std::to_string(c) + ", " + std::to_string(y) + ", " +
                                       std::to_string(x) + ") is not finite"));
        }
  }

  struct ViTShape {
    Index image, patch, grid, np, t, d, pd;
  };
  [[nodiscard]] ViTShape shape() const noexcept {
    const auto& c = config_;
    return {c.image_size,   c.patch_size, c.grid_size(), c.num_patches(),
            c.num_tokens(), c.embed_dim,  c.patch_dim()};
  }

  // ---- construction --------------------------------------------------------------------------

  void build(const quant::FakeQuantViT& fq) {
    using model::HookSite;
    using quant::WeightKind;
    config_.validate();
    if (!fq.weights_ready()) VITC_THROW(ArgumentError("IntViT: the weights are not quantized"));
    const auto& w = fq.master_weights();
    const ViTShape s = shape();
    const Index d = s.d;
    const int depth = static_cast<int>(config_.blocks.size());
    const double eps = config_.layer_norm_eps;

    // Patch embedding into block 0's residual codes.
    patch_in_ = detail::asym_point(fq, HookSite::kPatchInput, -1);
    {
      auto pw = detail::quantize_weight(fq, WeightKind::kPatchEmbed, -1);
      patch_w_ = detail::LinearWeights::pack(pw);
      const auto r0 = detail::residual_point(fq, HookSite::kBlockInput, 0, d);
      std::vector<double> out_scale(static_cast<std::size_t>(d));
      for (Index c = 0; c < d; ++c)
        out_scale[static_cast<std::size_t>(c)] = r0.channel_scale(static_cast<std::size_t>(c));
      patch_rescale_ =
          detail::make_rescale(detail::products(pw.scales, patch_in_.scale), {}, {}, out_scale,
                               -r0.zero_point, 255 - r0.zero_point, "IntViT: patch embedding");
      // Per patch token p: (bias + pos_embed[1 + p]) / S_c · 2^e_c; the class token row directly.
      patch_const_ = Tensor<std::int64_t, 2>({s.np, d});
      cls_codes_ = Tensor<std::int16_t, 1>({d});
      for (Index c = 0; c < d; ++c) {
        const auto cc = static_cast<std::size_t>(c);
        const double p2 = std::ldexp(1.0, patch_rescale_.e[cc]);
        for (Index p = 0; p < s.np; ++p) {
          const double v =
              (double{w.patch_embed.bias(c)} + double{w.pos_embed(0, 1 + p, c)}) / out_scale[cc];
          patch_const_(p, c) =
              static_cast<std::int64_t>(std::clamp(std::nearbyint(v * p2), -0x1p61, 0x1p61));
        }
        const float cls = w.cls_token(0, 0, c) + w.pos_embed(0, 0, c);
        const float q = std::nearbyint(cls / static_cast<float>(out_scale[cc]));
        cls_codes_(c) = static_cast<std::int16_t>(std::clamp(
            q, static_cast<float>(-r0.zero_point), static_cast<float>(255 - r0.zero_point)));
      }
    }

    blocks_.resize(static_cast<std::size_t>(depth));
    for (int l = 0; l < depth; ++l) {
      const auto& bc = config_.blocks[static_cast<std::size_t>(l)];
      const auto& bw = w.blocks[static_cast<std::size_t>(l)];
      Block& b = blocks_[static_cast<std::size_t>(l)];
      b.heads = bc.num_heads;
      b.dqk = bc.qk_head_dim;
      b.dv = bc.v_head_dim;
      b.hidden = bc.mlp_hidden;
      const Index qk = bc.qk_dim(), rows = bc.qkv_rows();
      const std::string at = "IntViT: block " + std::to_string(l);

      const auto r_in = detail::residual_point(fq, HookSite::kBlockInput, l, d);
      const auto r_mid = detail::residual_point(fq, HookSite::kMlpResidual, l, d);
      const auto r_out = l + 1 < depth
                             ? detail::residual_point(fq, HookSite::kBlockInput, l + 1, d)
                             : detail::residual_point(fq, HookSite::kFinalNormInput, -1, d);
      const auto qkv_in = detail::asym_point(fq, HookSite::kQkvInput, l);
      const auto q_pt = detail::asym_point(fq, HookSite::kQuery, l);
      const auto k_pt = detail::sym_point(fq, HookSite::kKey, l);
      const auto v_pt = detail::sym_point(fq, HookSite::kValue, l);
      if (k_pt.max_code != v_pt.max_code)  // one GEMM, one clamp
        VITC_THROW(ArgumentError("IntViT: key and value of block " + std::to_string(l) +
                                 " must have the same number of bits"));
      b.kv_max = k_pt.max_code;
      const float k_scale = k_pt.scale, v_scale = v_pt.scale;
      const auto& probs_pt = detail::ready_point(fq, HookSite::kAttentionProbs, l);
      const bool log2_attn = probs_pt.spec.scheme.kind == quant::SchemeKind::kLog2;
      if (log2_attn) {
        if (probs_pt.spec.scheme.bits > 4 ||
            probs_pt.spec.granularity.kind != quant::GranularityKind::kTensor)
          VITC_THROW(ArgumentError("IntViT: activation point " + probs_pt.name +
                                   ": log2 attention runs with 1 to 4 bits per tensor"));
      } else {
        detail::require_scheme(probs_pt, quant::SchemeKind::kAsymmetric,
                               "asymmetric (linear) 8-bit per tensor or log2 with 1 to 4 bits");
      }
      const auto proj_in = detail::asym_point(fq, HookSite::kProjInput, l);
      const auto fc1_in = detail::asym_point(fq, HookSite::kFc1Input, l);
      const auto fc2_in = detail::asym_point(fq, HookSite::kFc2Input, l);

      // LayerNorm 1 and the qkv GEMMs (Q asymmetric uint8; K, V symmetric int8).
      b.ln1 = detail::layernorm_to_asym(bw.norm1, r_in, qkv_in, eps);
      b.ln1_zp = qkv_in.zero_point - 128;
      auto wqkv = detail::quantize_weight(fq, WeightKind::kQkv, l);
      b.wq = detail::LinearWeights::pack(wqkv, 0, qk);
      b.wkv = detail::LinearWeights::pack(wqkv, qk, rows);
      const std::span<const float> ws(wqkv.scales), bias(bw.qkv.bias.data(), rows);
      b.rq_q = quant::make_requant_params(qkv_in.scale, ws.subspan(0, qk), bias.subspan(0, qk),
                                          q_pt.scale, q_pt.zero_point, qk, at + " query");
      b.q_zp = q_pt.zero_point;
      {
        // K and V in one GEMM: per-channel multipliers to the key or the value scale.
        auto rk = quant::make_requant_params(qkv_in.scale, ws.subspan(qk, qk), bias.subspan(qk, qk),
                                             k_scale, 0, qk, at + " key");
        auto rv = quant::make_requant_params(qkv_in.scale, ws.subspan(2 * qk, rows - 2 * qk),
                                             bias.subspan(2 * qk, rows - 2 * qk), v_scale, 0,
                                             rows - 2 * qk, at + " value");
        b.rq_kv = std::move(rk);
        b.rq_kv.multipliers.insert(b.rq_kv.multipliers.end(), rv.multipliers.begin(),
                                   rv.multipliers.end());
        b.rq_kv.bias.insert(b.rq_kv.bias.end(), rv.bias.begin(), rv.bias.end());
      }

      // Attention.
      const double score_scale =
          double{q_pt.scale} * k_scale / std::sqrt(static_cast<double>(b.dqk));
      b.softmax =
          kernels::prepare_softmax<Exp, kernels::LinearProb>(static_cast<float>(score_scale), 8);
      double probs_step = 1.0 / 255.0;  // linear: P = code / 255
      if (log2_attn) {
        // Log2: P = 2^−c with c = log_round(T/E) (kernels/softmax_int.hpp), i.e. levels relative
        // to 1, so P·2^(L−1) is the integer weight. The calibrated first level s of the
        // simulation is not used: its codes are round(−log2(P/s)), so its levels s·2^−q also
        // approximate P itself (as the linear path uses 1/255, not max/255).
        b.softmax_log2 = kernels::prepare_softmax<Exp, kernels::Log2Prob>(
            static_cast<float>(score_scale), probs_pt.spec.scheme.bits);
        probs_step = std::ldexp(1.0, -(b.log2_levels() - 1));
      }
      b.pv = kernels::fixed_point_from_scale(double{v_scale} * probs_step / proj_in.scale,
                                             "IntViT: P·V requantization");
      b.proj_zp = proj_in.zero_point;

      // proj + residual → mlp_residual codes.
      {
        auto wp = detail::quantize_weight(fq, WeightKind::kProj, l);
        b.wproj = detail::LinearWeights::pack(wp);
        std::vector<double> in_s(static_cast<std::size_t>(d)), out_s(static_cast<std::size_t>(d));
        for (std::size_t c = 0; c < out_s.size(); ++c) {
          in_s[c] = r_in.channel_scale(c);
          out_s[c] = r_mid.channel_scale(c);
        }
        b.res_attn = detail::make_rescale(detail::products(wp.scales, proj_in.scale), in_s,
                                          detail::to_double({bw.proj.bias.data(), std::size_t(d)}),
                                          out_s, -r_mid.zero_point, 255 - r_mid.zero_point,
                                          at + " attention residual");
      }

      // LayerNorm 2, fc1 + GELU → fc2 input codes.
      b.ln2 = detail::layernorm_to_asym(bw.norm2, r_mid, fc1_in, eps);
      b.ln2_zp = fc1_in.zero_point - 128;
      double fc2_scale = fc2_in.scale;
      {
        auto w1 = detail::quantize_weight(fq, WeightKind::kFc1, l);
        b.wfc1 = detail::LinearWeights::pack(w1);
        const std::span<const float> b1(bw.fc1.bias.data(), static_cast<std::size_t>(b.hidden));
        const double lo = -fc2_in.zero_point * double{fc2_in.scale};
        const double hi = (255 - fc2_in.zero_point) * double{fc2_in.scale};
        if constexpr (Gelu::kTable) {
          // fc1 output at 16 bits over the range where GELU's code changes (detail/gelu_table.hpp).
          detail::GeluTable table = detail::make_gelu_table(fc2_in.scale, fc2_in.zero_point);
          b.rq_fc1 = quant::make_requant_params(fc1_in.scale, w1.scales, b1,
                                                static_cast<float>(table.scale), table.zero_point,
                                                static_cast<std::size_t>(b.hidden), at + " fc1");
          b.gelu_table = std::move(table.codes);
          b.gelu_steps = detail::build_step_table(b.gelu_table.data() + 32768);
          b.gelu_buckets = detail::build_bucket_table(b.gelu_table.data() + 32768);
          b.fc2_zp = fc2_in.zero_point - 128;
        } else {
          // The GELU kernel writes symmetric int8: the fc2 input gets max(|lo|, |hi|)/127.
          fc2_scale = std::max(-lo, hi) / 127.0;
          const double g_scale = fc2_scale / 256.0;
          b.rq_fc1 =
              quant::make_requant_params(fc1_in.scale, w1.scales, b1, static_cast<float>(g_scale),
                                         0, static_cast<std::size_t>(b.hidden), at + " fc1");
          b.gelu = kernels::prepare_gelu<GeluKernel, std::int32_t>(static_cast<float>(g_scale),
                                                                   static_cast<float>(fc2_scale));
          b.fc2_zp = 0;
        }
      }

      // fc2 + residual → the next residual codes.
      {
        auto w2 = detail::quantize_weight(fq, WeightKind::kFc2, l);
        b.wfc2 = detail::LinearWeights::pack(w2);
        std::vector<double> in_s(static_cast<std::size_t>(d)), out_s(static_cast<std::size_t>(d));
        for (std::size_t c = 0; c < out_s.size(); ++c) {
          in_s[c] = r_mid.channel_scale(c);
          out_s[c] = r_out.channel_scale(c);
        }
        b.res_mlp =
            detail::make_rescale(detail::products(w2.scales, fc2_scale), in_s,
                                 detail::to_double({bw.fc2.bias.data(), std::size_t(d)}), out_s,
                                 -r_out.zero_point, 255 - r_out.zero_point, at + " MLP residual");
      }
    }

    // Final LayerNorm of the class tokens and the head.
    {
      const auto r_fin = detail::residual_point(fq, HookSite::kFinalNormInput, -1, d);
      const auto head_in = detail::asym_point(fq, HookSite::kHeadInput, -1);
      final_ln_ = detail::layernorm_to_asym(w.norm, r_fin, head_in, eps);
      head_zp_ = head_in.zero_point - 128;
      auto wh = detail::quantize_weight(fq, WeightKind::kHead, -1);
      head_w_ = detail::LinearWeights::pack(wh);
      const auto classes = static_cast<std::size_t>(config_.num_classes);
      auto rq = quant::make_requant_params(head_in.scale, wh.scales, {w.head.bias.data(), classes},
                                           1.0f, 0, classes, "IntViT: head");
      head_bias_ = std::move(rq.bias);
      head_scale_.resize(classes);
      for (std::size_t n = 0; n < classes; ++n)
        head_scale_[n] = static_cast<float>(double{head_in.scale} * wh.scales[n]);
    }
  }

  void allocate() {
    const ViTShape s = shape();
    const Index m = max_batch_ * s.t;
    Index qk = 0, kv = 0, vdim = 0, hidden = 0, dv = 0;
    for (const auto& bc : config_.blocks) {
      qk = std::max(qk, bc.qk_dim());
      kv = std::max(kv, bc.qk_dim() + bc.v_dim());
      vdim = std::max(vdim, bc.v_dim());
      hidden = std::max(hidden, bc.mlp_hidden);
      dv = std::max(dv, bc.v_head_dim);
    }
    patches_ = Tensor<std::uint8_t, 2>({max_batch_ * s.np, s.pd});
    acc_ = Tensor<std::int32_t, 2>({m, std::max(s.d, hidden)});
    res_ = Tensor<std::int16_t, 2>({m, s.d});
    ln_out_ = Tensor<std::int8_t, 2>({m, s.d});
    q_ = Tensor<std::uint8_t, 2>({m, qk});
    kv_ = Tensor<std::int8_t, 2>({m, kv});
    attn_ = Tensor<std::uint8_t, 2>({m, vdim});
    fc1_out16_ = Tensor<std::int16_t, 2>({Gelu::kTable ? m : 0, hidden});
    fc2_in_ = Tensor<std::int8_t, 2>({m, hidden});
    const int nt = threads();
    attn_threads_ = nt;
    // The widest attention GEMM: the score columns (T, or H·T for grouped heads), its depth
    // (head dim or all heads' dims) and the P·V output columns.
    Index cols = s.t, bk = 1, bn = 1;
    bool grouped = false;
    for (const Block& b : blocks_) {
      const Index g = heads_per_gemm(b, max_batch_);  // the most heads of any batch
      cols = std::max(cols, g * s.t);
      bk = std::max(bk, g * b.dqk);
      bn = std::max(bn, g * b.dv);
      grouped = grouped || g > 1;
    }
    scores_ = Tensor<std::int32_t, 2>({nt, s.t * cols});
    probs_ = Tensor<std::uint8_t, 2>({nt, s.t * cols});
    bool log2_16 = false;  // some block has 16 log2 levels: P·V in two byte halves
    for (const Block& b : blocks_) log2_16 = log2_16 || b.log2_levels() > 8;
    probs_hi_ = Tensor<std::uint8_t, 2>({nt, log2_16 ? s.t * cols : 0});
    pv_acc_ = Tensor<std::int32_t, 2>({nt, log2_16 ? 2 * s.t * std::max(dv, bn) : 0});
    kdiag_ = Tensor<std::int8_t, 2>({nt, grouped ? cols * bk : 0});
    vdiag_ = Tensor<std::int8_t, 2>({nt, grouped ? cols * bn : 0});
    // Scratch sized once for every GEMM run() makes: no allocation inside run().
    Index kmax = std::max({s.pd, s.d, vdim, hidden});
    ws_.reserve(m, kmax, std::max({kv, qk, hidden, s.d, config_.num_classes}));
    attn_ws_.resize(static_cast<std::size_t>(nt));
    kpack_.clear();
    vpack_.clear();
    for (int c = 0; c < nt; ++c) {
      attn_ws_[static_cast<std::size_t>(c)].reserve(s.t, std::max(cols, bk), std::max(cols, bn));
      kpack_.push_back(kernels::PackedWeightsInt8::reserved(bk, cols));
      vpack_.push_back(kernels::PackedWeightsInt8::reserved(cols, bn));
    }
    attn_ns_.assign(static_cast<std::size_t>(nt), {});
  }

  [[nodiscard]] int threads() const noexcept { return pool_ ? pool_->num_threads() : 1; }

  // Heads per attention GEMM in block b for a batch (HeadGrouping): 1, all, or for Auto the
  // fewest equal groups with batch·groups >= the attention threads.
  [[nodiscard]] Index heads_per_gemm(const Block& b, Index batch) const noexcept {
    const Index h = std::max<Index>(b.heads, 1);
    if (grouping_ == HeadGrouping::kAllHeads) return h;
    if (grouping_ == HeadGrouping::kPerHead || b.heads * shape().t > kGroupedHeadsMaxColumns)
      return 1;
    for (Index parts = 1; parts < h; ++parts)
      if (h % parts == 0 && batch * parts >= attn_threads_) return h / parts;
    return 1;
  }

  // ---- run -----------------------------------------------------------------------------------

  void quantize_input(const TensorView<const float, 4>& images, Index batch) {
    const ViTShape s = shape();
    const Index c_in = images.extent(1);
    const quant::QuantParams qp{patch_in_.scale, patch_in_.zero_point};
    with_policy([&](auto& pol) {
      pol.parallel_for(batch * s.np, 4, [&](ParallelIndex r0, ParallelIndex r1) {
        for (Index r = r0; r < r1; ++r) {
          const Index b = r / s.np, py = (r % s.np) / s.grid, px = r % s.grid;
          std::uint8_t* out = patches_.data() + r * s.pd;
          for (Index c = 0; c < c_in; ++c)
            for (Index ky = 0; ky < s.patch; ++ky) {
              // One row of the patch: contiguous pixels (stride sx), the simulation's formula.
              const float* src = &images(b, c, py * s.patch + ky, px * s.patch);
              const Index sx = images.stride(3);
#if VITC_HAVE_X86_TARGET_KERNELS
              if (helper_arch_ == kernels::arch::ArchId::kAvx512Vnni && sx == 1) {
                detail::quantize_u8_avx512(src, qp.scale, qp.zero_point, out, s.patch);
                out += s.patch;
                continue;
              }
              if (helper_arch_ == kernels::arch::ArchId::kAvx2 && sx == 1) {
                detail::quantize_u8_avx2(src, qp.scale, qp.zero_point, out, s.patch);
                out += s.patch;
                continue;
              }
#endif
              for (Index kx = 0; kx < s.patch; ++kx)
                out[kx] = static_cast<std::uint8_t>(
                    quant::detail::SchemeImpl<quant::SchemeKind::kAsymmetric>::quantize(
                        src[kx * sx], qp, 8));
              out += s.patch;
            }
        }
      });
    });
  }

  // detail::rescale_row, on AVX-512 or AVX2 when this path has it (the same integers).
  void rescale_row(const detail::Rescale& r, const std::int32_t* acc, const std::int16_t* x,
                   const std::int64_t* extra, std::int16_t* out, Index n) const noexcept {
#if VITC_HAVE_X86_TARGET_KERNELS
    if (helper_arch_ == kernels::arch::ArchId::kAvx512Vnni) {
      detail::rescale_row_avx512(r, acc, x, extra, out, n);
      return;
    }
    if (helper_arch_ == kernels::arch::ArchId::kAvx2) {
      detail::rescale_row_avx2(r, acc, x, extra, out, n);
      return;
    }
#endif
    detail::rescale_row(r, acc, x, extra, out, n);
  }

  // rescale_row with the x term over rows [r0, r1) of the accumulators and the residual stream,
  // in place; on AVX-512 by blocks of rows (detail::rescale_rows_avx512).
  void residual_rows(const detail::Rescale& r, const TensorView<std::int32_t, 2>& acc, Index res_ld,
                     Index r0, Index r1) noexcept {
    const Index d = shape().d;
#if VITC_HAVE_X86_TARGET_KERNELS
    if (helper_arch_ == kernels::arch::ArchId::kAvx512Vnni) {
      std::int16_t* x = res_.data() + r0 * res_ld;
      detail::rescale_rows_avx512(r, acc.data() + r0 * acc.stride(0), acc.stride(0), x, res_ld, x,
                                  res_ld, r1 - r0, d);
      return;
    }
#endif
    for (Index i = r0; i < r1; ++i) {
      std::int16_t* x = res_.data() + i * res_ld;
      rescale_row(r, acc.data() + i * acc.stride(0), x, nullptr, x, d);
    }
  }

  // Calls f(tag) with the kernels' path: Arch, or for arch::Auto the path chosen at construction
  // (helper_arch_), so that no kernel call inside run() reads VITC_ARCH or the CPU features again.
  template <class F>
  void on_arch(F&& f) const {
    if constexpr (std::is_same_v<Arch, kernels::arch::Auto>)
      kernels::arch::dispatch(helper_arch_, std::forward<F>(f));
    else
      std::forward<F>(f)(Arch{});
  }

  // C = pipeline((A − zero_point)·W) for a linear layer's weights, int8 or 4-bit.
  template <class AT, class Pipeline, class OutT, class Pol>
  void linear(const detail::LinearWeights& w, TensorView<AT, 2> a, std::int32_t zero_point,
              const Pipeline& pipeline, TensorView<OutT, 2> c, Pol& pol) {
    if (w.int4)
      on_arch([&](auto tag) {
        kernels::gemm_int4<decltype(tag)>(a, zero_point, w.w4, pipeline, c, pol, &ws_);
      });
    else
      on_arch([&](auto tag) {
        kernels::gemm_int8<decltype(tag)>(a, zero_point, w.w8, pipeline, c, pol, &ws_);
      });
  }

  template <bool kProfile>
  void run_impl(const TensorView<const float, 4>& images, const TensorView<float, 2>& logits,
                StageProfile* profile) {
    check_io(images, logits);
    detail::StageClock<kProfile> clock(profile);
    const Index batch = images.extent(0);
    quantize_input(images, batch);
    patch_embed(batch);
    clock.mark(Stage::kPatchEmbed, -1);
    const int depth = static_cast<int>(blocks_.size());
    for (int l = 0; l < depth; ++l) block(l, batch, l == depth - 1, clock);
    head(batch, logits);
    clock.mark(Stage::kHead, -1);
    if constexpr (kProfile) profile->add_run();
  }

  void patch_embed(Index batch) {
    const ViTShape s = shape();
    auto acc = acc_.view().slice(0, 0, batch * s.np).slice(1, 0, s.d);
    with_policy([&](auto& pol) {
      linear(patch_w_, patches_.cview().slice(0, 0, batch * s.np), patch_in_.zero_point,
             kernels::RawInt32{}, acc, pol);
      pol.parallel_for(batch * s.np, 8, [&](ParallelIndex r0, ParallelIndex r1) {
        for (Index r = r0; r < r1; ++r) {
          const Index b = r / s.np, p = r % s.np;
          rescale_row(patch_rescale_, acc.data() + r * acc.stride(0), nullptr,
                      patch_const_.data() + p * s.d, res_.data() + (b * s.t + 1 + p) * s.d, s.d);
        }
      });
    });
    for (Index b = 0; b < batch; ++b)
      std::memcpy(res_.data() + b * s.t * s.d, cls_codes_.data(),
                  static_cast<std::size_t>(s.d) * sizeof(std::int16_t));
  }

  // Attention of every (image, head group) of block b: Q·Kᵀ and P·V through the int8 GEMM with
  // the group's K (as Kᵀ) or V packed per item as the B operand; items round-robin over the
  // chunks, each with its own scratch. A group is one head, or all heads (HeadGrouping): then
  // Kᵀ and V are block-diagonal, the scores of item (image) are T rows of H·T, i.e. H·T rows of
  // T (row i, head h at i·H + h) for the softmax, and P·V writes every head's output at once.
  template <class Clock, class Pol>
  void attention(const Block& b, Index batch, bool cls_only, Pol& pol) {
    const ViTShape s = shape();
    const Index t = s.t, qk = b.heads * b.dqk, qt = cls_only ? 1 : t;
    const Index g = heads_per_gemm(b, batch), cols = g * t, gqk = g * b.dqk, gdv = g * b.dv;
    const Index q_ld = q_.extent(1), kv_ld = kv_.extent(1), out_ld = attn_.extent(1);
    const Index groups = b.heads / g, items = batch * groups;
    const Index chunks = std::min<Index>(items, attn_threads_);
    const PvPipe pvpipe{{b.pv}, {b.proj_zp}, {}};
    pol.parallel_for(chunks, 1, [&](ParallelIndex c0, ParallelIndex c1) {
      for (Index c = c0; c < c1; ++c) {
        const auto cs = static_cast<std::size_t>(c);
        const TensorView<std::int32_t, 2> scores(scores_.data() + c * scores_.extent(1),
                                                 {qt, cols});
        const TensorView<std::uint8_t, 2> probs(probs_.data() + c * probs_.extent(1), {qt, cols});
        kernels::GemmWorkspace& ws = attn_ws_[cs];
        kernels::PackedWeightsInt8& kp = kpack_[cs];
        kernels::PackedWeightsInt8& vp = vpack_[cs];
        Sequential seq;
        std::array<std::int64_t, 3> ns{};
        for (Index item = c; item < items; item += chunks) {
          const Index img = item / groups, h0 = (item % groups) * g;
          const std::int8_t* kv = kv_.data() + img * t * kv_ld;
          const std::int64_t t0 = Clock::now_ns();
          if (g == 1) {
            kp.repack(TensorView<const std::int8_t, 2>(kv + h0 * b.dqk, {t, b.dqk}, {kv_ld, 1})
                          .transposed());
          } else {
            std::int8_t* kd = kdiag_.data() + c * kdiag_.extent(1);
            fill_block_diagonal(kd, kv + h0 * b.dqk, kv_ld, t, g, b.dqk);
            kp.repack(TensorView<const std::int8_t, 2>(kd, {cols, gqk}).transposed());
          }
          const TensorView<const std::uint8_t, 2> qh(q_.data() + img * t * q_ld + h0 * b.dqk,
                                                     {qt, gqk}, {q_ld, 1});
          on_arch([&](auto tag) {
            kernels::gemm_int8<decltype(tag)>(qh, b.q_zp, kp, kernels::RawInt32{}, scores, seq,
                                              &ws);
          });
          const std::int64_t t1 = Clock::now_ns();
          const TensorView<const std::int32_t, 2> rows(scores.data(), {qt * g, t});
          const TensorView<std::uint8_t, 2> prob_rows(probs.data(), {qt * g, t});
          if (!b.softmax_log2)
            on_arch(
                [&](auto tag) { kernels::softmax_int<decltype(tag)>(b.softmax, rows, prob_rows); });
          else
            on_arch([&](auto tag) {
              kernels::softmax_int<decltype(tag)>(*b.softmax_log2, rows, prob_rows);
            });
          const std::int64_t t2 = Clock::now_ns();
          if (g == 1) {
            vp.repack(TensorView<const std::int8_t, 2>(kv + qk + h0 * b.dv, {t, b.dv}, {kv_ld, 1}));
          } else {
            std::int8_t* vd = vdiag_.data() + c * vdiag_.extent(1);
            fill_block_diagonal(vd, kv + qk + h0 * b.dv, kv_ld, t, g, b.dv);
            vp.repack(TensorView<const std::int8_t, 2>(vd, {cols, gdv}));
          }
          const Index out_row = cls_only ? img : img * t;
          const TensorView<std::uint8_t, 2> out(attn_.data() + out_row * out_ld + h0 * b.dv,
                                                {qt, gdv}, {out_ld, 1});
          if (!b.softmax_log2) {
            on_arch([&](auto tag) {
              kernels::gemm_int8<decltype(tag)>(TensorView<const std::uint8_t, 2>(probs), 0, vp,
                                                pvpipe, out, seq, &ws);
            });
          } else {
            log2_pv(b, probs, c, vp, pvpipe, out, ws);
          }
          const std::int64_t t3 = Clock::now_ns();
          ns[0] += t1 - t0;
          ns[1] += t2 - t1;
          ns[2] += t3 - t2;
        }
        if constexpr (Clock::kOn) attn_ns_[cs] = ns;
      }
    });
  }

  // dst [g·T × g·d] = the block-diagonal matrix of g heads' d columns of src (T rows of stride
  // ld, head h in columns h·d .. h·d + d − 1 from src): row h·T + j holds src row j's head-h
  // columns in columns h·d .., zeros elsewhere.
  static void fill_block_diagonal(std::int8_t* dst, const std::int8_t* src, Index ld, Index t,
                                  Index g, Index d) noexcept {
    const Index width = g * d;
    std::memset(dst, 0, static_cast<std::size_t>(g * t * width));
    for (Index h = 0; h < g; ++h)
      for (Index j = 0; j < t; ++j)
        std::memcpy(dst + (h * t + j) * width + h * d, src + j * ld + h * d,
                    static_cast<std::size_t>(d));
  }

  // P·V for log2 codes c (kernels::Log2Prob; c = L is the zero): the weights w = 2^(L−1−c) are
  // the P operand. With L <= 8 they are uint8 and one GEMM with the fused requantization does
  // it. With L = 16 they reach 2^15, so they are split into bytes, w = 256·hi + lo (a power of
  // two is in one byte or the other), and the two exact products are combined before the same
  // requantization: |256·(hi·V) + lo·V| <= 127·2^15·Σ_j 2^−c_j < 127·2^17 < 2^24, since the
  // kernel's code c = log_round(t) >= ⌊log2 t⌋ with t = round(T/E) >= T/(2E) gives 2^−c < 2/t
  // <= 4·E/T. Overwrites `codes` with the (low) weights.
  void log2_pv(const Block& b, const TensorView<std::uint8_t, 2>& codes, Index chunk,
               const kernels::PackedWeightsInt8& vp, const PvPipe& pvpipe,
               const TensorView<std::uint8_t, 2>& out, kernels::GemmWorkspace& ws) {
    const Index rows = codes.extent(0), t = codes.extent(1);
    Sequential seq;
    std::uint8_t* hi = probs_hi_.data() + chunk * probs_hi_.extent(1);
    detail::log2_weights(codes.data(), rows * t, b.log2_levels(), hi, codes.data());
    if (b.log2_levels() <= 8) {
      on_arch([&](auto tag) {
        kernels::gemm_int8<decltype(tag)>(TensorView<const std::uint8_t, 2>(codes), 0, vp, pvpipe,
                                          out, seq, &ws);
      });
      return;
    }
    const Index dv = out.extent(1);
    std::int32_t* acc = pv_acc_.data() + chunk * pv_acc_.extent(1);
    const TensorView<std::int32_t, 2> acc_hi(acc, {rows, dv}), acc_lo(acc + rows * dv, {rows, dv});
    on_arch([&](auto tag) {
      kernels::gemm_int8<decltype(tag)>(TensorView<const std::uint8_t, 2>(hi, {rows, t}), 0, vp,
                                        acc_hi, seq, &ws);
    });
    on_arch([&](auto tag) {
      kernels::gemm_int8<decltype(tag)>(TensorView<const std::uint8_t, 2>(codes), 0, vp, acc_lo,
                                        seq, &ws);
    });
    for (Index i = 0; i < rows * dv; ++i) acc[i] = acc[i] * 256 + acc[rows * dv + i];
    on_arch([&](auto tag) {
      kernels::apply_output_pipeline<decltype(tag)>(pvpipe,
                                                    TensorView<const std::int32_t, 2>(acc_hi), out);
    });
  }

  template <class Clock>
  void block(int l, Index batch, bool cls_only, Clock& clock) {
    const Block& b = blocks_[static_cast<std::size_t>(l)];
    const ViTShape s = shape();
    const Index t = s.t, d = s.d, m = batch * t, qk = b.heads * b.dqk, kvn = qk + b.heads * b.dv;
    const Index vdim = b.heads * b.dv;
    with_policy([&](auto& pol) {
      // LayerNorm 1 and qkv.
      auto res_all = res_.view().slice(0, 0, m);
      auto ln = ln_out_.view().slice(0, 0, m);
      on_arch([&](auto tag) {
        kernels::layernorm_int<decltype(tag)>(b.ln1, TensorView<const std::int16_t, 2>(res_all), ln,
                                              pol);
      });
      clock.mark(Stage::kNorm1, l);
      const QPipe qpipe{{b.rq_q.bias}, {b.rq_q.multipliers}, {b.q_zp}, {}};
      linear(b.wq, TensorView<const std::int8_t, 2>(ln), b.ln1_zp, qpipe,
             q_.view().slice(0, 0, m).slice(1, 0, qk), pol);
      const KvPipe kvpipe{{b.rq_kv.bias}, {b.rq_kv.multipliers}, {-b.kv_max, b.kv_max}, {}};
      linear(b.wkv, TensorView<const std::int8_t, 2>(ln), b.ln1_zp, kvpipe,
             kv_.view().slice(0, 0, m).slice(1, 0, kvn), pol);
      clock.mark(Stage::kQkv, l);

      attention<Clock>(b, batch, cls_only, pol);
      if constexpr (Clock::kOn) {
        std::array<std::int64_t, 3> sum{};
        for (const auto& a : attn_ns_)
          for (std::size_t i = 0; i < 3; ++i) sum[i] += a[i];
        std::fill(attn_ns_.begin(), attn_ns_.end(), std::array<std::int64_t, 3>{});
        clock.mark_split(l, std::array<Stage, 3>{Stage::kQk, Stage::kSoftmax, Stage::kPv}, sum);
      }

      // From here on: all tokens, or the class tokens only (rows b·T of the residual).
      const Index mr = cls_only ? batch : m;
      const Index res_ld = cls_only ? t * d : d;
      auto acc = acc_.view().slice(0, 0, mr).slice(1, 0, d);
      linear(b.wproj, attn_.cview().slice(0, 0, mr).slice(1, 0, vdim), b.proj_zp,
             kernels::RawInt32{}, acc, pol);
      pol.parallel_for(mr, 8, [&](ParallelIndex r0, ParallelIndex r1) {
        residual_rows(b.res_attn, acc, res_ld, r0, r1);
      });
      clock.mark(Stage::kProjResidual, l);

      // LayerNorm 2, fc1, GELU, fc2.
      const TensorView<const std::int16_t, 2> res_rows(res_.data(), {mr, d}, {res_ld, 1});
      auto ln2 = ln_out_.view().slice(0, 0, mr);
      on_arch([&](auto tag) { kernels::layernorm_int<decltype(tag)>(b.ln2, res_rows, ln2, pol); });
      clock.mark(Stage::kNorm2, l);
      auto fc2_in = fc2_in_.view().slice(0, 0, mr).slice(1, 0, b.hidden);
      if constexpr (Gelu::kTable) {
        auto h16 = fc1_out16_.view().slice(0, 0, mr).slice(1, 0, b.hidden);
        const Fc1TablePipe pipe{
            {b.rq_fc1.bias}, {b.rq_fc1.multipliers}, {b.rq_fc1.output_zero_point}, {}};
        linear(b.wfc1, TensorView<const std::int8_t, 2>(ln2), b.ln2_zp, pipe, h16, pol);
        const std::int8_t* table = b.gelu_table.data() + 32768;
        pol.parallel_for(mr, 4, [&](ParallelIndex r0, ParallelIndex r1) {
          // Locals: the int8 stores below could alias anything the closure refers to.
          const std::int8_t* const tab = table;
          const Index hidden = b.hidden;
          const bool avx512 = helper_arch_ == kernels::arch::ArchId::kAvx512Vnni;
          const bool vbmi = vbmi_ && b.gelu_buckets.usable;
          for (Index r = r0; r < r1; ++r) {
            const std::int16_t* in = h16.data() + r * h16.stride(0);
            std::int8_t* out = fc2_in.data() + r * fc2_in.stride(0);
#if VITC_HAVE_X86_TARGET_KERNELS
            if (vbmi)
              detail::bucket_lookup_avx512vbmi(b.gelu_buckets, in, out, b.hidden);
            else if (avx512 && b.gelu_steps.usable)
              detail::step_lookup_avx512(b.gelu_steps, in, out, b.hidden);
            else if (avx512)
              detail::table_lookup_avx512(table, in, out, b.hidden);
            else
#endif
              for (Index c = 0; c < hidden; ++c) out[c] = tab[in[c]];
          }
        });
      } else {
        auto h32 = acc_.view().slice(0, 0, mr).slice(1, 0, b.hidden);
        const Fc1KernelPipe pipe{{b.rq_fc1.bias}, {b.rq_fc1.multipliers}};
        linear(b.wfc1, TensorView<const std::int8_t, 2>(ln2), b.ln2_zp, pipe, h32, pol);
        on_arch([&](auto tag) {
          kernels::gelu_int<decltype(tag)>(*b.gelu, TensorView<const std::int32_t, 2>(h32), fc2_in,
                                           pol);
        });
      }
      clock.mark(Stage::kFc1Gelu, l);
      linear(b.wfc2, TensorView<const std::int8_t, 2>(fc2_in), b.fc2_zp, kernels::RawInt32{}, acc,
             pol);
      pol.parallel_for(mr, 8, [&](ParallelIndex r0, ParallelIndex r1) {
        residual_rows(b.res_mlp, acc, res_ld, r0, r1);
      });
      clock.mark(Stage::kFc2Residual, l);
    });
  }

  void head(Index batch, TensorView<float, 2> logits) {
    const ViTShape s = shape();
    with_policy([&](auto& pol) {
      const TensorView<const std::int16_t, 2> cls(res_.data(), {batch, s.d}, {s.t * s.d, 1});
      auto ln = ln_out_.view().slice(0, 0, batch);
      on_arch([&](auto tag) { kernels::layernorm_int<decltype(tag)>(final_ln_, cls, ln, pol); });
      const HeadPipe pipe{{head_bias_}, {head_scale_}};
      linear(head_w_, TensorView<const std::int8_t, 2>(ln), head_zp_, pipe, logits, pol);
    });
  }

  model::ViTConfig config_;
  Index max_batch_ = 1;
  ThreadPool* pool_ = nullptr;
  int attn_threads_ = 1;
  HeadGrouping grouping_ = HeadGrouping::kAuto;
  // The path of the engine's own vector loops (input quantization, residual rescaling, GELU
  // lookup): AVX-512 or AVX2 when Arch is that path, or is Auto on a CPU that has it. For Auto it
  // is also the kernels' path (on_arch).
  kernels::arch::ArchId helper_arch_ = kernels::arch::ArchId::kScalar;
  bool vbmi_ = false;  // helper_arch_ is AVX-512 and the CPU has VBMI (GELU bucket lookups)

  detail::AsymPoint patch_in_;
  detail::LinearWeights patch_w_;
  detail::Rescale patch_rescale_;
  Tensor<std::int64_t, 2> patch_const_;
  Tensor<std::int16_t, 1> cls_codes_;
  std::vector<Block> blocks_;
  kernels::LayerNormParams final_ln_;
  std::int32_t head_zp_ = 0;
  detail::LinearWeights head_w_;
  std::vector<std::int32_t> head_bias_;
  std::vector<float> head_scale_;

  Tensor<std::uint8_t, 2> patches_;
  Tensor<std::int32_t, 2> acc_;
  Tensor<std::int16_t, 2> res_;
  Tensor<std::int8_t, 2> ln_out_;
  Tensor<std::uint8_t, 2> q_;
  Tensor<std::int8_t, 2> kv_;
  Tensor<std::uint8_t, 2> attn_;
  Tensor<std::int16_t, 2> fc1_out16_;
  Tensor<std::int8_t, 2> fc2_in_;
  Tensor<std::int32_t, 2> scores_;
  Tensor<std::uint8_t, 2> probs_;
  Tensor<std::uint8_t, 2> probs_hi_;  // log2 attention with 16 levels: the high weight bytes
  Tensor<std::int32_t, 2> pv_acc_;    // and the two raw P·V products
  kernels::GemmWorkspace ws_;         // the model GEMMs' scratch
  std::vector<kernels::GemmWorkspace> attn_ws_;       // per attention chunk
  std::vector<kernels::PackedWeightsInt8> kpack_;     // per chunk: Kᵀ of one head (group)
  std::vector<kernels::PackedWeightsInt8> vpack_;     // per chunk: V of one head (group)
  Tensor<std::int8_t, 2> kdiag_, vdiag_;              // per chunk: block-diagonal K, V
  std::vector<std::array<std::int64_t, 3>> attn_ns_;  // per chunk, when profiling
};

}  // namespace vitc::engine
