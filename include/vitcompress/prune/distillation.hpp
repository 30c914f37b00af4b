// SPDX-License-Identifier: Apache-2.0
#pragma once
// Fine-tuning a pruned ViT with knowledge distillation from the unpruned one.
//
// DistilledViT is a `Trainable` (model/train.hpp) for the student (the pruned weights, trained in
// place) that also runs the teacher (the original weights, read only). Its loss per image is
//
//   (1 - alpha) * CE(student logits, label; smoothing) + alpha * tau^2 * KL(p_t || p_s)
//
// with p = softmax(logits / tau) (Hinton et al. 2015; the tau^2 keeps the soft term's gradient on
// the scale of the hard one). The gradient with respect to the student logits s is
// (1 - alpha) (softmax(s) - target) / B + alpha * tau * (p_s - p_t) / B. The teacher costs one
// inference pass per batch. Teacher and student must share the number of classes and the input
// size (ArgumentError otherwise). Weight decay as in TrainableViT.

#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "vitcompress/core/error.hpp"
#include "vitcompress/core/parallel_for.hpp"
#include "vitcompress/core/tensor.hpp"
#include "vitcompress/model/adamw.hpp"
#include "vitcompress/model/loss.hpp"
#include "vitcompress/model/vit_backward.hpp"
#include "vitcompress/model/vit_forward.hpp"
#include "vitcompress/model/vit_weights.hpp"
#include "vitcompress/model/vit_workspace.hpp"

namespace vitc::prune {

struct DistillationConfig {
  double alpha = 0.5;        // weight of the soft (teacher) term, in [0, 1]
  double temperature = 2.0;  // tau > 0
};

class DistilledViT {
 public:
  DistilledViT(model::ViTWeights<float>& student, const model::ViTWeights<float>& teacher,
               DistillationConfig config = {}, ThreadPool* pool = nullptr)
      : student_(student), teacher_(teacher), grads_(student.config), config_(config), pool_(pool) {
    if (!(config.alpha >= 0 && config.alpha <= 1))
      VITC_THROW(ArgumentError("distillation alpha must be in [0, 1]"));
    if (!(config.temperature > 0) || !std::isfinite(config.temperature))
      VITC_THROW(ArgumentError("distillation temperature must be finite and positive"));
    const auto& s = student.config;
    const auto& t = teacher.config;
    if (s.num_classes != t.num_classes || s.image_size != t.image_size ||
        s.in_channels != t.in_channels)
      VITC_THROW(
          ArgumentError("distillation: teacher and student differ in classes or input size"));
  }

  [[nodiscard]] Index num_classes() const noexcept { return student_.config.num_classes; }

  model::LossStats compute_gradients(TensorView<const float, 4> images,
                                     TensorView<const std::int32_t, 1> labels,
                                     double label_smoothing) {
    const Index batch = images.extent(0), classes = num_classes();
    if (student_logits_.extent(0) != batch) {
      student_logits_ = Tensor<float, 2>({batch, classes});
      teacher_logits_ = Tensor<float, 2>({batch, classes});
      grad_ = Tensor<float, 2>({batch, classes});
    }
    model::vit_forward(teacher_, images, teacher_logits_.view(), teacher_ws_, pool_,
                       model::Pass::kInference);
    model::vit_forward(student_, images, student_logits_.view(), train_ws_, pool_,
                       model::Pass::kTraining);
    model::LossStats stats = model::softmax_cross_entropy(student_logits_.cview(), labels,
                                                          label_smoothing, grad_.view());
    const double a = config_.alpha, tau = config_.temperature;
    double kl_sum = 0;
    std::vector<double> ps(static_cast<std::size_t>(classes)), pt(ps.size());
    for (Index r = 0; r < batch; ++r) {
      softmax(student_logits_.cview()[r], tau, ps);
      softmax(teacher_logits_.cview()[r], tau, pt);
      for (Index c = 0; c < classes; ++c) {
        const auto k = static_cast<std::size_t>(c);
        if (pt[k] > 0) kl_sum += pt[k] * (std::log(pt[k]) - std::log(std::max(ps[k], 1e-300)));
        grad_(r, c) = static_cast<float>((1 - a) * grad_(r, c) +
                                         a * tau * (ps[k] - pt[k]) / static_cast<double>(batch));
      }
    }
    stats.loss_sum = (1 - a) * stats.loss_sum + a * tau * tau * kl_sum;
    model::vit_backward(student_, train_ws_, grad_.cview(), grads_, model::GradMode::kOverwrite,
                        pool_);
    return stats;
  }

  void predict(TensorView<const float, 4> images, TensorView<float, 2> logits) {
    model::vit_forward(student_, images, logits, eval_ws_, pool_, model::Pass::kInference);
  }

  std::vector<model::ParameterSlot> parameter_slots() {
    std::vector<model::ParameterSlot> slots;
    auto params = student_.parameters();
    auto grads = grads_.parameters();
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
  static void softmax(TensorView<const float, 1> z, double tau, std::vector<double>& p) {
    double max = -INFINITY;
    for (Index c = 0; c < z.extent(0); ++c) max = std::max(max, static_cast<double>(z(c)) / tau);
    double sum = 0;
    for (Index c = 0; c < z.extent(0); ++c) {
      p[static_cast<std::size_t>(c)] = std::exp(static_cast<double>(z(c)) / tau - max);
      sum += p[static_cast<std::size_t>(c)];
    }
    for (double& v : p) v /= sum;
  }

  model::ViTWeights<float>& student_;
  const model::ViTWeights<float>& teacher_;
  model::ViTWeights<float> grads_;
  DistillationConfig config_;
  ThreadPool* pool_;
  model::ViTWorkspace<float> train_ws_, eval_ws_, teacher_ws_;
  Tensor<float, 2> student_logits_, teacher_logits_, grad_;
};

}  // namespace vitc::prune
