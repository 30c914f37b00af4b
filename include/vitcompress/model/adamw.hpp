// SPDX-License-Identifier: Apache-2.0
#pragma once
// AdamW (Loshchilov & Hutter): Adam with decoupled weight decay, as torch.optim.AdamW computes it.
// For each parameter p with gradient g at step t (t counts from 1):
//
//   p ← p − lr·wd·p                      (only for slots with decay = true)
//   m ← β1·m + (1 − β1)·g,   v ← β2·v + (1 − β2)·g²
//   p ← p − lr · (m / (1 − β1^t)) / (√(v / (1 − β2^t)) + ε)
//
// Moments are kept per slot in float, keyed by the slot's position: pass the same slots in the
// same order every step. An optional global gradient-norm clip scales g first.

#include <cmath>
#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "vitcompress/core/error.hpp"
#include "vitcompress/core/tensor.hpp"

namespace vitc::model {

// One trainable tensor, flattened: its values, its gradient, and whether weight decay applies
// (timm's convention: no decay for biases, norms, the class token and the position embedding).
struct ParameterSlot {
  std::string name;
  std::span<float> value;
  std::span<const float> grad;
  bool decay = true;
};

struct AdamWConfig {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.05;
  double clip_grad_norm = 0;  // 0: no clipping
};

class AdamW {
 public:
  explicit AdamW(AdamWConfig config = {}) : config_(config) {
    if (!(config.beta1 >= 0 && config.beta1 < 1) || !(config.beta2 >= 0 && config.beta2 < 1))
      VITC_THROW(ArgumentError("AdamW: beta1 and beta2 must be in [0, 1)"));
    if (!(config.eps > 0)) VITC_THROW(ArgumentError("AdamW: eps must be > 0"));
    if (!(config.weight_decay >= 0)) VITC_THROW(ArgumentError("AdamW: weight_decay must be >= 0"));
    if (!(config.clip_grad_norm >= 0))
      VITC_THROW(ArgumentError("AdamW: clip_grad_norm must be >= 0"));
  }

  [[nodiscard]] long steps() const noexcept { return step_; }
  [[nodiscard]] const AdamWConfig& config() const noexcept { return config_; }

  // Global L2 norm of all gradients.
  static double gradient_norm(std::span<const ParameterSlot> slots) {
    double sum = 0;
    for (const auto& s : slots)
      for (float g : s.grad) sum += static_cast<double>(g) * g;
    return std::sqrt(sum);
  }

  // One update of every slot with learning rate `lr`. Returns the gradient norm before clipping.
  double step(std::span<const ParameterSlot> slots, double lr) {
    if (!(lr >= 0) || !std::isfinite(lr))
      VITC_THROW(ArgumentError("AdamW: learning rate must be finite and >= 0"));
    if (moments_.empty()) {
      for (const auto& s : slots) moments_.emplace_back(s.value.size());
    }
    if (moments_.size() != slots.size())
      VITC_THROW(ArgumentError("AdamW: got " + std::to_string(slots.size()) +
                               " parameter slots, the optimizer was started with " +
                               std::to_string(moments_.size())));
    const double norm = gradient_norm(slots);
    if (!std::isfinite(norm)) VITC_THROW(ArgumentError("AdamW: the gradient is not finite"));
    double scale = 1;
    if (config_.clip_grad_norm > 0 && norm > config_.clip_grad_norm)
      scale = config_.clip_grad_norm / norm;

    ++step_;
    const double b1 = config_.beta1, b2 = config_.beta2;
    const double c1 = 1 - std::pow(b1, static_cast<double>(step_));
    const double c2 = 1 - std::pow(b2, static_cast<double>(step_));
    const float step_size = static_cast<float>(lr / c1);
    const float inv_sqrt_c2 = static_cast<float>(1 / std::sqrt(c2));
    const float eps = static_cast<float>(config_.eps);
    for (std::size_t i = 0; i < slots.size(); ++i) {
      const auto& s = slots[i];
      auto& mv = moments_[i];
      if (s.value.size() != s.grad.size() || s.value.size() != mv.m.size())
        VITC_THROW(ShapeError("AdamW: parameter '" + s.name +
                              "' changed size or has a gradient of " + "another size"));
      const float decay = s.decay ? static_cast<float>(1 - lr * config_.weight_decay) : 1.0f;
      const float fb1 = static_cast<float>(b1), fb2 = static_cast<float>(b2);
      const float fscale = static_cast<float>(scale);
      float* p = s.value.data();
      const float* g = s.grad.data();
      float* m = mv.m.data();
      float* v = mv.v.data();
      for (std::size_t j = 0; j < s.value.size(); ++j) {
        const float gj = g[j] * fscale;
        m[j] = fb1 * m[j] + (1 - fb1) * gj;
        v[j] = fb2 * v[j] + (1 - fb2) * gj * gj;
        p[j] = p[j] * decay - step_size * m[j] / (std::sqrt(v[j]) * inv_sqrt_c2 + eps);
      }
    }
    return norm;
  }

 private:
  struct Moments {
    explicit Moments(std::size_t n) : m(n, 0.0f), v(n, 0.0f) {}
    std::vector<float> m, v;
  };
  AdamWConfig config_;
  std::vector<Moments> moments_;
  long step_ = 0;
};

}  // namespace vitc::model
