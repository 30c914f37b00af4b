// SPDX-License-Identifier: Apache-2.0
#pragma once
// The simulated quantized ViT: the float ViT of model/ with every quantization point of a
// QuantConfig (quant/quant_config.hpp) fake-quantized, for post-training quantization (PTQ) and
// quantization-aware training (QAT).
//
// What it computes. Weights: the forward pass runs on a COPY of the float ("master") weights in
// which every quantized weight is replaced by fake_quantize(weight) with its own parameters
// (per output channel or per group), and the other parameters are copied (or rounded to fp16).
// Activations: FakeQuantHooks, an ActivationHooks object (model/vit_hooks.hpp), rewrites every
// hook site in place with fake_quantize(x): every GEMM input (patches, LayerNorm outputs, head
// outputs, GELU output, attention output), q, k and v, the post-softmax probabilities, the
// residual stream where it enters each LayerNorm (whose rewritten values also flow down the skip
// connection, as in an integer engine). The result is what an integer engine with these
// quantizers computes, up to the engine's own integer approximations of softmax, LayerNorm and
// GELU, which stay float here (as in PTQ4ViT and RepQ-ViT; FQ-ViT and I-ViT replace them).
//
// PTQ. quantize_weights() computes each weight's parameters with its configured observer (for
// example a per-channel MSE clipping search) on the master weights. calibrate() runs the model on
// the first `count` images of a (training) set with activation observers attached (activations
// unquantized, weights already quantized) and then fixes every activation's parameters.
//
// QAT. FakeQuantViT is a model::Trainable: compute_gradients() refreshes the simulated weights
// from the master weights with the FIXED PTQ parameters, runs a training forward with the hooks
// recording, per activation element, whether it lay inside its clip range, and back-propagates
// with the straight-through estimator: the gradient of a fake-quantized value passes unchanged to
// its input inside the clip range and is zero outside (clipped), for activations (in the hooks'
// backward) and weights (masking the gradient of master weights outside their clip range).
// Log-domain and fp16 points pass gradients straight through below their top level. The
// optimizer updates the master weights (parameter_slots()); predict() sees the refreshed copy.
// Scales stay at their PTQ values unless enable_learned_scales() is called (LSQ-style learned
// step sizes, see there).
//
// Errors: a config naming an override point the model does not have, or invalid specs, throw
// ArgumentError at construction; predicting before calibrate() with calibrated activation points
// throws ArgumentError naming the first uncalibrated point; NaN or infinity in weights or
// calibration activations throws ArgumentError naming the tensor (the observers check). Not
// thread-safe; the ThreadPool given parallelizes the forward and backward passes inside.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <map>
#include <numeric>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "vitcompress/core/error.hpp"
#include "vitcompress/core/float16.hpp"
#include "vitcompress/core/parallel_for.hpp"
#include "vitcompress/core/tensor.hpp"
#include "vitcompress/model/adamw.hpp"
#include "vitcompress/model/image_batches.hpp"
#include "vitcompress/model/loss.hpp"
#include "vitcompress/model/vit_backward.hpp"
#include "vitcompress/model/vit_forward.hpp"
#include "vitcompress/model/vit_hooks.hpp"
#include "vitcompress/model/vit_weights.hpp"
#include "vitcompress/model/vit_workspace.hpp"
#include "vitcompress/quant/observer.hpp"
#include "vitcompress/quant/power_of_two_factor.hpp"
#include "vitcompress/quant/quant_config.hpp"
#include "vitcompress/quant/quantizer.hpp"
#include "vitcompress/quant/scheme.hpp"

namespace vitc::quant {

// The state of one activation point.
struct ActivationPoint {
  std::string name;  // activation_point_name(site, block)
  model::HookSite site = model::HookSite::kPatchInput;
  int block = -1;
  TensorQuantSpec spec;
  TensorQuantParams params;      // valid when ready
  std::optional<PtfParams> ptf;  // when spec.ptf: the base scale, zero point and α per channel
  bool ready = false;            // params valid (or nothing to calibrate)
  // Calibration (kObserve) and training (STE masks) scratch.
  std::optional<AnyObserver> observer;
  std::optional<PtfObserver> ptf_observer;
  std::vector<std::uint8_t> mask;  // 1 where the last recorded forward was inside the clip range
  Index mask_rows = 0, mask_cols = 0;
  // Learned step size (enable_learned_scales): scales = base_scales · exp(log_scale[0]).
  std::vector<float> base_scales, log_scale, log_scale_grad;
  std::vector<float> dscale;  // per element of the last recorded forward: d x̂ / d log_scale
  [[nodiscard]] bool learns_scale() const noexcept { return !log_scale.empty(); }
};

namespace detail {

// Writes mask[r·cols + c] = 1 when x(r, c) lies inside its group's clip range (log: x <= s).
inline void clip_mask(const TensorView<const float, 2>& x, const TensorQuantParams& p,
                      std::vector<std::uint8_t>& mask) {
  const Index rows = x.extent(0), cols = x.extent(1);
  mask.resize(static_cast<std::size_t>(rows * cols));
  for_each_group_run(p.granularity, rows, cols, [&](Index r, Index c0, Index c1, Index g) {
    const Range clip = clip_range(p.group(g), p.scheme);
    const float* row = x.data() + r * x.stride(0);
    std::uint8_t* m = mask.data() + r * cols;
    for (Index c = c0; c < c1; ++c) {
      const float v = row[c * x.stride(1)];
      m[c] = static_cast<std::uint8_t>(v >= clip.lo && v <= clip.hi);
    }
  });
}

// d x̂ / d s for an affine scheme at x with parameters p (LSQ, Esser et al. 2020): inside the clip
// range round(x / s) − x / s, below it qmin − z, above it qmax − z.
[[nodiscard]] inline float affine_dscale(float x, QuantParams p, SchemeSpec s) noexcept {
  const float lo = static_cast<float>(s.qmin() - p.zero_point);
  const float hi = static_cast<float>(s.qmax() - p.zero_point);
  const float v = x / p.scale;
  const float r = std::nearbyint(v);
  if (r < lo) return lo;
  if (r > hi) return hi;
  return r - v;
}

[[nodiscard]] inline bool is_affine(const SchemeSpec& s) noexcept {
  return s.kind == SchemeKind::kSymmetric || s.kind == SchemeKind::kAsymmetric;
}

}  // namespace detail

class FakeQuantHooks {
 public:
  static constexpr bool kEnabled = true;

  enum class Mode {
    kFloat,     // no change: the float model
    kObserve,   // calibration: observers watch, values unchanged
    kQuantize,  // fake quantization with the calibrated parameters
  };

  FakeQuantHooks() = default;

  // One point per hook site the model has: sites inside blocks for blocks 0..depth-1, the others
  // once (block -1). Validates every spec.
  FakeQuantHooks(const QuantConfig& config, int depth) : depth_(depth) {
    index_.assign(static_cast<std::size_t>((depth + 1) * model::kNumHookSites), -1);
    for (int b = -1; b < depth; ++b)
      for (int s = 0; s < model::kNumHookSites; ++s) {
        const auto site = static_cast<model::HookSite>(s);
        if (site_in_blocks(site) != (b >= 0)) continue;
        ActivationPoint p;
        p.site = site;
        p.block = b;
        p.name = activation_point_name(site, b);
        p.spec = config.activation(site, b);
        p.spec.validate(p.name);
        if (p.spec.scheme.kind == SchemeKind::kFp16) {
          p.params = {p.spec.scheme, {}, {1.0f}, {0}};
          p.ready = true;
        } else if (!p.spec.quantized()) {
          p.ready = true;
        }
        index_[slot(site, b)] = static_cast<int>(points_.size());
        points_.push_back(std::move(p));
      }
  }

  [[nodiscard]] Mode mode() const noexcept { return mode_; }
  // Entering kObserve creates fresh observers for every point that needs calibration.
  void set_mode(Mode m) {
    if (m == Mode::kObserve) {
      for (ActivationPoint& p : points_) {
        p.observer.reset();
        p.ptf_observer.reset();
        if (!p.spec.needs_calibration()) continue;
        if (p.spec.ptf)
          p.ptf_observer.emplace();
        else
          p.observer = make_observer(p.spec.observer, p.spec.granularity);
      }
    }
    mode_ = m;
  }
  // While set (QAT), kQuantize forwards record the clip masks the backward pass applies.
  void set_record_masks(bool on) noexcept { record_masks_ = on; }

  // Fixes every observed point's parameters from its observer and frees the observers. A point
  // that saw no data (the model never reached it) is an ArgumentError naming it.
  void finish_calibration() {
    for (ActivationPoint& p : points_) {
      if (!p.spec.needs_calibration()) continue;
      if (p.spec.ptf) {
        if (!p.ptf_observer) VITC_THROW(ArgumentError(p.name + ": no calibration data observed"));
        p.ptf = p.ptf_observer->params(p.spec.scheme.bits, p.name);
        p.params = p.ptf->as_tensor_params();
      } else {
        if (!p.observer) VITC_THROW(ArgumentError(p.name + ": no calibration data observed"));
        p.params = observer_params(*p.observer, p.spec.scheme, p.name);
      }
      p.ready = true;
      p.observer.reset();
      p.ptf_observer.reset();
    }
    mode_ = Mode::kQuantize;
  }

  void forward(model::HookSite site, int block, const TensorView<float, 2>& x) {
    if (mode_ == Mode::kFloat) return;
    ActivationPoint& p = point(site, block);
    if (!p.spec.quantized()) return;
    if (mode_ == Mode::kObserve) {
      if (p.ptf_observer)
        p.ptf_observer->observe(x, p.name);
      else if (p.observer)
        observe(*p.observer, x, p.name);
      return;
    }
    if (!p.ready)
      VITC_THROW(ArgumentError(p.name + ": activation quantization parameters are not calibrated "
                                        "(run calibrate() first)"));
    if (record_masks_ && p.spec.needs_calibration()) {
      detail::clip_mask(x, p.params, p.mask);
      p.mask_rows = x.extent(0);
      p.mask_cols = x.extent(1);
      if (p.learns_scale()) record_dscale(p, x);
    } else {
      p.mask.clear();
      p.mask_rows = p.mask_cols = 0;
    }
    fake_quantize(x, p.params, x, p.name);
  }

  void backward(model::HookSite site, int block, const TensorView<const float, 2>& /*x*/,
                const TensorView<float, 2>& grad) {
    if (mode_ != Mode::kQuantize) return;
    ActivationPoint& p = point(site, block);
    if (p.mask.empty()) return;  // straight through
    if (grad.extent(0) != p.mask_rows || grad.extent(1) != p.mask_cols)
      VITC_THROW(
          ShapeError(p.name + ": backward gradient shape differs from the recorded forward"));
    if (p.learns_scale() && !p.dscale.empty()) {
      double acc = 0.0;
      for (Index r = 0; r < p.mask_rows; ++r) {
        const float* g = grad.data() + r * grad.stride(0);
        const float* d = p.dscale.data() + r * p.mask_cols;
        for (Index c = 0; c < p.mask_cols; ++c)
          acc += static_cast<double>(g[c * grad.stride(1)]) * d[c];
      }
      p.log_scale_grad[0] += static_cast<float>(acc);
    }
    for (Index r = 0; r < p.mask_rows; ++r) {
      float* g = grad.data() + r * grad.stride(0);
      const std::uint8_t* m = p.mask.data() + r * p.mask_cols;
      for (Index c = 0; c < p.mask_cols; ++c)
        if (!m[c]) g[c * grad.stride(1)] = 0.0f;
    }
  }

  // Learned step sizes: every calibrated point with an affine scheme gets one learnable
  // log-multiplier of its calibrated scales (for a power-of-two-factor point, of its base scale,
  // so the factors stay powers of two). Requires calibrated points.
  void enable_learned_scales() {
    for (ActivationPoint& p : points_) {
      if (!p.spec.needs_calibration() || !detail::is_affine(p.spec.scheme)) continue;
      if (!p.ready)
        VITC_THROW(ArgumentError(p.name + ": calibrate before enabling learned scales"));
      p.base_scales = p.params.scales;
      p.log_scale.assign(1, 0.0f);
      p.log_scale_grad.assign(1, 0.0f);
    }
  }
  // scales = base_scales · exp(log_scale) for every learning point.
  void apply_learned_scales() {
    for (ActivationPoint& p : points_) {
      if (!p.learns_scale()) continue;
      const float m = std::exp(p.log_scale[0]);
      for (std::size_t g = 0; g < p.base_scales.size(); ++g)
        p.params.scales[g] = p.base_scales[g] * m;
      if (p.ptf) p.ptf->base_scale = p.params.scales[0] / std::ldexp(1.0f, p.ptf->alpha[0]);
    }
  }
  void zero_scale_gradients() {
    for (ActivationPoint& p : points_)
      if (p.learns_scale()) p.log_scale_grad[0] = 0.0f;
  }

  [[nodiscard]] ActivationPoint& point(model::HookSite site, int block) {
    const int i = (block >= -1 && block < depth_) ? index_[slot(site, block)] : -1;
    if (i < 0)
      VITC_THROW(ArgumentError(std::string("FakeQuantHooks: no point for site ") +
                               model::to_string(site) + " at block " + std::to_string(block)));
    return points_[static_cast<std::size_t>(i)];
  }
  [[nodiscard]] const ActivationPoint& point(model::HookSite site, int block) const {
    return const_cast<FakeQuantHooks*>(this)->point(site, block);
  }
  [[nodiscard]] ActivationPoint* find(const std::string& name) {
    for (ActivationPoint& p : points_)
      if (p.name == name) return &p;
    return nullptr;
  }
  [[nodiscard]] std::vector<ActivationPoint>& points() noexcept { return points_; }
  [[nodiscard]] const std::vector<ActivationPoint>& points() const noexcept { return points_; }

 private:
  [[nodiscard]] std::size_t slot(model::HookSite site, int block) const noexcept {
    return static_cast<std::size_t>((block + 1) * model::kNumHookSites + static_cast<int>(site));
  }
  // d x̂ / d log_scale = s_g · d x̂ / d s_g for every element of x (before it is rewritten).
  static void record_dscale(ActivationPoint& p, const TensorView<float, 2>& x) {
    const Index rows = x.extent(0), cols = x.extent(1);
    p.dscale.resize(static_cast<std::size_t>(rows * cols));
    for_each_group_run(p.params.granularity, rows, cols, [&](Index r, Index c0, Index c1, Index g) {
      const QuantParams qp = p.params.group(g);
      const float* row = x.data() + r * x.stride(0);
      float* d = p.dscale.data() + r * cols;
      for (Index c = c0; c < c1; ++c)
        d[c] = qp.scale * detail::affine_dscale(row[c * x.stride(1)], qp, p.params.scheme);
    });
  }

  int depth_ = 0;
  Mode mode_ = Mode::kQuantize;
  bool record_masks_ = false;
  std::vector<int> index_;
  std::vector<ActivationPoint> points_;
};

static_assert(model::ActivationHooks<FakeQuantHooks, float>);

// One quantized weight.
struct WeightPoint {
  std::string name;  // timm name
  WeightKind kind = WeightKind::kQkv;
  int block = -1;
  TensorQuantSpec spec;
  Index rows = 0, cols = 0;  // the 2-D view: [out, in] ([D, C·P·P] for the patch embedding)
  TensorQuantParams params;  // valid when ready
  bool ready = false;
  // Learned step sizes (enable_learned_scales): scales[g] = base_scales[g] · exp(log_scale[g]).
  std::vector<float> base_scales, log_scale, log_scale_grad;
  [[nodiscard]] bool learns_scale() const noexcept { return !log_scale.empty(); }
};

class FakeQuantViT {
 public:
  // Takes the float weights (the master copy QAT updates). Validates the config against the model:
  // every override must name a point the model has.
  FakeQuantViT(model::ViTWeights<float> weights, QuantConfig config, ThreadPool* pool = nullptr)
      : master_(std::move(weights)), config_(std::move(config)), pool_(pool) {
    master_.check_shapes();
    config_.validate();
    const int depth = static_cast<int>(master_.config.blocks.size());
    hooks_ = FakeQuantHooks(config_, depth);
    std::map<std::string, int> by_name;
    const auto add = [&](WeightKind k, int b) {
      WeightPoint w;
      w.kind = k;
      w.block = b;
      w.name = weight_name(k, b);
      w.spec = config_.weight(k, b);
      w.spec.validate(w.name);
      const auto v = weight_view(master_, k, b);
      w.rows = v.extent(0);
      w.cols = v.extent(1);
      if (w.spec.scheme.kind == SchemeKind::kFp16) {
        w.params = {w.spec.scheme, {}, {1.0f}, {0}};
        w.ready = true;
      } else if (!w.spec.quantized()) {
        w.ready = true;
      }
      by_name[w.name] = static_cast<int>(weights_.size());
      weights_.push_back(std::move(w));
    };
    add(WeightKind::kPatchEmbed, -1);
    for (int b = 0; b < depth; ++b)
      for (WeightKind k : {WeightKind::kQkv, WeightKind::kProj, WeightKind::kFc1, WeightKind::kFc2})
        add(k, b);
    add(WeightKind::kHead, -1);
    for (const auto& [point, spec] : config_.overrides)
      if (!by_name.contains(point) && hooks_.find(point) == nullptr)
        VITC_THROW(ArgumentError("quantization config: override '" + point +
                                 "' names no weight or activation point of this model"));
    // Parameter index -> weight point (or -1), in ViTWeights table order.
    for (const auto& ref : master_.parameters()) {
      const auto it = by_name.find(ref.name);
      param_point_.push_back(it == by_name.end() ? -1 : it->second);
    }
    simulated_ = master_;
    dirty_ = true;
  }

  [[nodiscard]] const QuantConfig& config() const noexcept { return config_; }
  [[nodiscard]] model::ViTWeights<float>& master_weights() noexcept { return master_; }
  [[nodiscard]] const model::ViTWeights<float>& master_weights() const noexcept { return master_; }
  [[nodiscard]] FakeQuantHooks& hooks() noexcept { return hooks_; }
  [[nodiscard]] const FakeQuantHooks& hooks() const noexcept { return hooks_; }
  [[nodiscard]] std::vector<WeightPoint>& weight_points() noexcept { return weights_; }
  [[nodiscard]] const std::vector<WeightPoint>& weight_points() const noexcept { return weights_; }
  [[nodiscard]] Index num_classes() const noexcept { return master_.config.num_classes; }
  void set_pool(ThreadPool* pool) noexcept { pool_ = pool; }

  // The weights the forward pass uses (refreshed from the master weights when they changed).
  [[nodiscard]] const model::ViTWeights<float>& simulated_weights() {
    refresh();
    return simulated_;
  }

  // PTQ of the weights: each quantized weight's parameters from its observer on the master weights
  // (ArgumentError naming a weight with NaN/inf).
  void quantize_weights() {
    for (WeightPoint& w : weights_) {
      if (!w.spec.needs_calibration()) continue;
      const TensorView<const float, 2> v = weight_view(master_, w.kind, w.block);
      AnyObserver obs = make_observer(w.spec.observer, w.spec.granularity);
      observe(obs, v, w.name);
      w.params = observer_params(obs, w.spec.scheme, w.name);
      if (w.spec.group_scale_bits > 0)
        snap_group_scales(w.params, v.extent(0), w.spec.group_scale_bits, w.name);
      w.ready = true;
    }
    dirty_ = true;
  }
  [[nodiscard]] bool weights_ready() const noexcept {
    return std::all_of(weights_.begin(), weights_.end(),
                       [](const WeightPoint& w) { return w.ready; });
  }

  // PTQ of the activations: observes the first `count` images of `data` (count <= data.size(),
  // batches of `batch_size`, no augmentation), then fixes every activation's parameters.
  // Quantizes the weights first if that has not been done. on_batch(done, total) reports progress.
  void calibrate(const model::LabeledImages& data, Index count,
                 const model::ImageNormalization& norm = {}, Index batch_size = 64,
                 const std::function<void(Index, Index)>& on_batch = {}) {
    if (count < 1 || count > data.size())
      VITC_THROW(ArgumentError("calibrate: count " + std::to_string(count) + " outside [1, " +
                               std::to_string(data.size()) + "] images"));
    if (batch_size < 1) VITC_THROW(ArgumentError("calibrate: batch_size must be >= 1"));
    if (!weights_ready()) quantize_weights();
    refresh();
    const Index h = data.images.extent(1), w = data.images.extent(2);
    Tensor<float, 4> batch({std::min(batch_size, count), 1, h, w});
    Tensor<float, 2> logits({std::min(batch_size, count), num_classes()});
    std::vector<Index> idx;
    hooks_.set_mode(FakeQuantHooks::Mode::kObserve);
    for (Index start = 0; start < count; start += batch_size) {
      const Index b = std::min(batch_size, count - start);
      idx.resize(static_cast<std::size_t>(b));
      std::iota(idx.begin(), idx.end(), start);
      auto x = batch.view().slice(0, 0, b);
      auto z = logits.view().slice(0, 0, b);
      model::make_image_batch(data.images, idx, norm, {}, nullptr, x);
      model::vit_forward(simulated_, TensorView<const float, 4>(x), z, eval_ws_, pool_,
                         model::Pass::kInference, hooks_);
      if (on_batch) on_batch(start + b, count);
    }
    hooks_.finish_calibration();
  }

  // LSQ-style learned step sizes for QAT (after calibration): each affine weight group and each
  // affine activation point gets a learnable log-multiplier of its calibrated scale(s), trained
  // with the weights through parameter_slots() ("quant.POINT.log_scale", no weight decay). The
  // gradient is LSQ's: d x̂ / d s = round(x / s) − x / s inside the clip range, qmin − z or
  // qmax − z outside, times s for the log parameterization. LSQ's gradient scale 1/√(N·Qp) is
  // left out: AdamW's update does not depend on a constant gradient scale.
  void enable_learned_scales() {
    if (!weights_ready())
      VITC_THROW(ArgumentError("learned scales: quantize the weights first (quantize_weights())"));
    hooks_.enable_learned_scales();
    for (WeightPoint& w : weights_) {
      // Integer group scales stay as snapped: learned ones would leave the σ·m form.
      if (!w.spec.needs_calibration() || !detail::is_affine(w.spec.scheme) ||
          w.spec.group_scale_bits > 0)
        continue;
      w.base_scales = w.params.scales;
      w.log_scale.assign(w.base_scales.size(), 0.0f);
      w.log_scale_grad.assign(w.base_scales.size(), 0.0f);
    }
    dirty_ = true;
  }

  // model::Trainable ---------------------------------------------------------------------------

  void predict(TensorView<const float, 4> images, TensorView<float, 2> logits) {
    refresh();
    hooks_.set_record_masks(false);
    model::vit_forward(simulated_, images, logits, eval_ws_, pool_, model::Pass::kInference,
                       hooks_);
  }

  model::LossStats compute_gradients(TensorView<const float, 4> images,
                                     TensorView<const std::int32_t, 1> labels,
                                     double label_smoothing) {
    if (!weights_ready())
      VITC_THROW(ArgumentError("QAT: weights are not quantized (run quantize_weights() first)"));
    refresh();
    const Index batch = images.extent(0);
    if (logits_.extent(0) != batch) {
      logits_ = Tensor<float, 2>({batch, num_classes()});
      grad_logits_ = Tensor<float, 2>({batch, num_classes()});
    }
    allocate_gradients();
    hooks_.zero_scale_gradients();
    hooks_.set_record_masks(true);
    model::vit_forward(simulated_, images, logits_.view(), train_ws_, pool_, model::Pass::kTraining,
                       hooks_);
    const model::LossStats stats =
        model::softmax_cross_entropy(logits_.cview(), labels, label_smoothing, grad_logits_.view());
    model::vit_backward(simulated_, train_ws_, grad_logits_.cview(), grads_,
                        model::GradMode::kOverwrite, pool_, TensorView<float, 4>{}, hooks_);
    hooks_.set_record_masks(false);
    mask_weight_gradients();
    dirty_ = true;  // the optimizer updates the master weights next
    return stats;
  }

  std::vector<model::ParameterSlot> parameter_slots() {
    allocate_gradients();
    std::vector<model::ParameterSlot> slots;
    auto params = master_.parameters();
    auto grads = grads_.parameters();
    slots.reserve(params.size());
    for (std::size_t i = 0; i < params.size(); ++i) {
      const bool decay = params[i].shape.size() >= 2 && params[i].name != "cls_token" &&
                         params[i].name != "pos_embed";
      slots.push_back({params[i].name, params[i].values,
                       std::span<const float>(grads[i].values.data(), grads[i].values.size()),
                       decay});
    }
    for (WeightPoint& w : weights_)
      if (w.learns_scale())
        slots.push_back({"quant." + w.name + ".log_scale", w.log_scale, w.log_scale_grad, false});
    for (ActivationPoint& p : hooks_.points())
      if (p.learns_scale())
        slots.push_back({"quant." + p.name + ".log_scale", p.log_scale, p.log_scale_grad, false});
    dirty_ = true;
    return slots;
  }

  // The 2-D view of a quantized weight in `w` ([D, C·P·P] for the patch embedding).
  template <class W>
  static auto weight_view(W& w, WeightKind k, int block) -> decltype(w.head.weight.view()) {
    const auto b = static_cast<std::size_t>(std::max(block, 0));
    switch (k) {
      case WeightKind::kPatchEmbed: {
        const auto& pw = w.patch_embed.weight;
        return w.patch_embed.weight.view().template reshape<2>(
            {pw.extent(0), pw.extent(1) * pw.extent(2) * pw.extent(3)});
      }
      case WeightKind::kQkv:
        return w.blocks[b].qkv.weight.view();
      case WeightKind::kProj:
        return w.blocks[b].proj.weight.view();
      case WeightKind::kFc1:
        return w.blocks[b].fc1.weight.view();
      case WeightKind::kFc2:
        return w.blocks[b].fc2.weight.view();
      case WeightKind::kHead:
        break;
    }
    return w.head.weight.view();
  }

 private:
  // simulated = fake_quantize(master) for quantized weights; copies (or fp16 rounding) otherwise.
  void refresh() {
    if (!dirty_) return;
    hooks_.apply_learned_scales();
    for (WeightPoint& w : weights_)
      if (w.learns_scale())
        for (std::size_t g = 0; g < w.base_scales.size(); ++g)
          w.params.scales[g] = w.base_scales[g] * std::exp(w.log_scale[g]);
    auto src = std::as_const(master_).parameters();
    auto dst = simulated_.parameters();
    for (std::size_t i = 0; i < src.size(); ++i) {
      const int wp = param_point_[i];
      if (wp >= 0 && weights_[static_cast<std::size_t>(wp)].spec.quantized()) {
        const WeightPoint& w = weights_[static_cast<std::size_t>(wp)];
        if (!w.ready) {
          std::copy(src[i].values.begin(), src[i].values.end(), dst[i].values.begin());
          continue;  // quantize_weights() not yet run
        }
        const TensorView<const float, 2> from(src[i].values.data(), {w.rows, w.cols});
        const TensorView<float, 2> to(dst[i].values.data(), {w.rows, w.cols});
        fake_quantize(from, w.params, to, w.name);
      } else if (config_.other_params == SchemeKind::kFp16) {
        for (std::size_t j = 0; j < src[i].values.size(); ++j)
          dst[i].values[j] = half_bits_to_float(float_to_half_bits(src[i].values[j]));
      } else {
        std::copy(src[i].values.begin(), src[i].values.end(), dst[i].values.begin());
      }
    }
    dirty_ = false;
  }

  // The gradients exist from the first training use on: a model that only predicts (evaluation,
  // calibration, building the integer engine) does not carry a third copy of the weights.
  void allocate_gradients() {
    if (grads_.size() == 0) grads_ = model::ViTWeights<float>(master_.config);
  }

  // Straight-through estimator for weights: zero gradient where the master weight is clipped.
  void mask_weight_gradients() {
    for (WeightPoint& w : weights_) {
      if (!w.spec.needs_calibration()) continue;
      const TensorView<const float, 2> v = weight_view(std::as_const(master_), w.kind, w.block);
      const TensorView<float, 2> g = weight_view(grads_, w.kind, w.block);
      if (w.learns_scale()) {
        std::fill(w.log_scale_grad.begin(), w.log_scale_grad.end(), 0.0f);
        for_each_group_run(
            w.params.granularity, w.rows, w.cols, [&](Index r, Index c0, Index c1, Index grp) {
              const QuantParams qp = w.params.group(grp);
              double acc = 0.0;
              for (Index c = c0; c < c1; ++c)
                acc += static_cast<double>(g(r, c)) * qp.scale *
                       detail::affine_dscale(v(r, c), qp, w.params.scheme);
              w.log_scale_grad[static_cast<std::size_t>(grp)] += static_cast<float>(acc);
            });
      }
      for_each_group_run(w.params.granularity, w.rows, w.cols,
                         [&](Index r, Index c0, Index c1, Index grp) {
                           const Range clip = clip_range(w.params.group(grp), w.params.scheme);
                           for (Index c = c0; c < c1; ++c)
                             if (v(r, c) < clip.lo || v(r, c) > clip.hi) g(r, c) = 0.0f;
                         });
    }
  }

  model::ViTWeights<float> master_;
  QuantConfig config_;
  ThreadPool* pool_ = nullptr;
  FakeQuantHooks hooks_;
  std::vector<WeightPoint> weights_;
  std::vector<int> param_point_;
  model::ViTWeights<float> simulated_;
  model::ViTWeights<float> grads_;
  model::ViTWorkspace<float> eval_ws_, train_ws_;
  Tensor<float, 2> logits_, grad_logits_;
  bool dirty_ = true;
};

}  // namespace vitc::quant
