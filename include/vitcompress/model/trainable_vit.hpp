// SPDX-License-Identifier: Apache-2.0
#pragma once
// The float ViT as a `Trainable` (model/train.hpp): it owns the gradient buffers and workspaces and
// borrows the weights, so the same weights object is trained in place and saved afterwards.
// Weight decay follows timm: none for biases, LayerNorm parameters, the class token and the
// position embedding (every tensor of rank < 2 and the two token tensors).

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "vitcompress/core/parallel_for.hpp"
#include "vitcompress/core/tensor.hpp"
#include "vitcompress/model/adamw.hpp"
#include "vitcompress/model/loss.hpp"
#include "vitcompress/model/vit_backward.hpp"
#include "vitcompress/model/vit_forward.hpp"
#include "vitcompress/model/vit_hooks.hpp"
#include "vitcompress/model/vit_weights.hpp"
#include "vitcompress/model/vit_workspace.hpp"

namespace vitc::model {

template <class Hooks = NoHooks>
class TrainableViT {
 public:
  // `weights` must outlive this object; `pool` may be null (one thread).
  explicit TrainableViT(ViTWeights<float>& weights, ThreadPool* pool = nullptr, Hooks hooks = {})
      : weights_(weights), grads_(weights.config), pool_(pool), hooks_(std::move(hooks)) {}

  [[nodiscard]] Index num_classes() const noexcept { return weights_.config.num_classes; }
  [[nodiscard]] ViTWeights<float>& weights() noexcept { return weights_; }
  [[nodiscard]] const ViTWeights<float>& gradients() const noexcept { return grads_; }
  [[nodiscard]] Hooks& hooks() noexcept { return hooks_; }

  LossStats compute_gradients(TensorView<const float, 4> images,
                              TensorView<const std::int32_t, 1> labels, double label_smoothing) {
    const Index batch = images.extent(0);
    if (logits_.extent(0) != batch) {
      logits_ = Tensor<float, 2>({batch, num_classes()});
      grad_logits_ = Tensor<float, 2>({batch, num_classes()});
    }
    vit_forward(weights_, images, logits_.view(), train_ws_, pool_, Pass::kTraining, hooks_);
    const LossStats stats =
        softmax_cross_entropy(logits_.cview(), labels, label_smoothing, grad_logits_.view());
    vit_backward(weights_, train_ws_, grad_logits_.cview(), grads_, GradMode::kOverwrite, pool_,
                 TensorView<float, 4>{}, hooks_);
    return stats;
  }

  void predict(TensorView<const float, 4> images, TensorView<float, 2> logits) {
    vit_forward(weights_, images, logits, eval_ws_, pool_, Pass::kInference, hooks_);
  }

  std::vector<ParameterSlot> parameter_slots() {
    std::vector<ParameterSlot> slots;
    auto params = weights_.parameters();
    auto grads = grads_.parameters();
    slots.reserve(params.size());
    for (std::size_t i = 0; i < params.size(); ++i) {
      const bool decay = params[i].shape.size() >= 2 && params[i].name != "cls_token" &&
                         params[i].name != "pos_embed";
      slots.push_back({params[i].name, params[i].values,
                       std::span<const float>(grads[i].values.data(), grads[i].values.size()),
                       decay});
    }
    return slots;
  }

 private:
  ViTWeights<float>& weights_;
  ViTWeights<float> grads_;
  ViTWorkspace<float> train_ws_, eval_ws_;
  ThreadPool* pool_;
  Hooks hooks_;
  Tensor<float, 2> logits_, grad_logits_;
};

}  // namespace vitc::model
