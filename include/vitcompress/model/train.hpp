// SPDX-License-Identifier: Apache-2.0
#pragma once
// The training loop: shuffled mini-batches, optional augmentation, AdamW with warm-up + cosine
// learning rate, label-smoothed cross-entropy, and top-1 evaluation after each epoch.
//
// It is generic over what it trains. A `Trainable` model offers:
//   compute_gradients(images [B,1,H,W], labels [B], label_smoothing) -> LossStats
//       forward + backward of the mean loss, *overwriting* the gradients;
//   parameter_slots() -> std::vector<ParameterSlot>   values and gradients, stable order;
//   predict(images, logits [B, classes])              forward only;
//   num_classes()
// so the float ViT, a pruned ViT being fine-tuned, a fake-quantised ViT under QAT, or a student
// distilled from a teacher all train through the same loop.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <functional>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "vitcompress/core/error.hpp"
#include "vitcompress/core/tensor.hpp"
#include "vitcompress/model/adamw.hpp"
#include "vitcompress/model/image_batches.hpp"
#include "vitcompress/model/loss.hpp"
#include "vitcompress/model/lr_schedule.hpp"

namespace vitc::model {

// A model that predicts logits for a batch of images (what evaluate_top1 needs).
template <class M>
concept Classifier = requires(M& m, TensorView<const float, 4> x, TensorView<float, 2> logits) {
  { m.num_classes() } -> std::convertible_to<Index>;
  m.predict(x, logits);
};

// A Classifier that the trainer can also fit (gradients and parameter slots).
template <class M>
concept Trainable = Classifier<M> &&
    requires(M& m, TensorView<const float, 4> x, TensorView<const std::int32_t, 1> y) {
  { m.compute_gradients(x, y, 0.0) } -> std::same_as<LossStats>;
  { m.parameter_slots() } -> std::same_as<std::vector<ParameterSlot>>;
};

struct TrainConfig {
  int epochs = 10;
  Index batch_size = 128;
  double lr = 1e-3;          // peak learning rate
  double min_lr = 1e-5;      // at the end of the cosine
  double warmup_epochs = 1;  // linear warm-up, in epochs (fractions allowed)
  AdamWConfig adamw{};
  double label_smoothing = 0.1;
  Augmentation augment{};
  ImageNormalization normalization{};
  std::uint64_t seed = 0;
  Index eval_batch_size = 256;

  void validate() const {
    if (epochs < 0) VITC_THROW(ArgumentError("epochs must be >= 0"));
    if (batch_size < 1) VITC_THROW(ArgumentError("batch_size must be >= 1"));
    if (eval_batch_size < 1) VITC_THROW(ArgumentError("eval_batch_size must be >= 1"));
    if (!(lr >= 0) || !(min_lr >= 0)) VITC_THROW(ArgumentError("lr and min_lr must be >= 0"));
    if (!(warmup_epochs >= 0) || warmup_epochs > epochs)
      VITC_THROW(ArgumentError("warmup_epochs must be in [0, epochs]"));
    if (!(label_smoothing >= 0 && label_smoothing < 1))
      VITC_THROW(ArgumentError("label_smoothing must be in [0, 1)"));
  }
};

struct TrainProgress {
  int epoch = 0;  // 1-based
  int epochs = 0;
  Index step = 0;  // within the epoch, 1-based
  Index steps_per_epoch = 0;
  double loss = 0;      // running mean over the epoch so far
  double accuracy = 0;  // running training top-1 over the epoch so far
  double lr = 0;
  double images_per_second = 0;
  double eta_seconds = 0;
};

struct EpochResult {
  int epoch = 0;
  double train_loss = 0;
  double train_accuracy = 0;
  double eval_accuracy = std::numeric_limits<double>::quiet_NaN();  // NaN without an eval set
  double seconds = 0;
};

// Top-1 accuracy on a labelled set (no augmentation).
template <Classifier M>
double evaluate_top1(M& model, const LabeledImages& data, const ImageNormalization& norm,
                     Index batch_size = 256) {
  data.validate();
  if (batch_size < 1) VITC_THROW(ArgumentError("batch_size must be >= 1"));
  const Index n = data.size(), h = data.images.extent(1), w = data.images.extent(2);
  if (n == 0) VITC_THROW(ArgumentError("evaluate_top1: the data set is empty"));
  const Index classes = model.num_classes();
  Tensor<float, 4> batch({std::min(batch_size, n), 1, h, w});
  Tensor<float, 2> logits({std::min(batch_size, n), classes});
  std::vector<Index> indices;
  Index correct = 0;
  for (Index start = 0; start < n; start += batch_size) {
    const Index b = std::min(batch_size, n - start);
    indices.resize(static_cast<std::size_t>(b));
    std::iota(indices.begin(), indices.end(), start);
    auto x = batch.view().slice(0, 0, b);
    auto z = logits.view().slice(0, 0, b);
    make_image_batch(data.images, indices, norm, {}, nullptr, x);
    model.predict(TensorView<const float, 4>(x), z);
    for (Index i = 0; i < b; ++i) {
      Index arg = 0;
      for (Index c = 1; c < classes; ++c)
        if (z(i, c) > z(i, arg)) arg = c;
      if (arg == static_cast<Index>(data.labels(start + i))) ++correct;
    }
  }
  return static_cast<double>(correct) / static_cast<double>(n);
}

// Trains `model` in place; returns one result per epoch. `eval` may be null.
template <Trainable M>
std::vector<EpochResult> train(M& model, const LabeledImages& data, const LabeledImages* eval,
                               const TrainConfig& config,
                               const std::function<void(const TrainProgress&)>& on_progress = {},
                               const std::function<void(const EpochResult&)>& on_epoch = {}) {
  config.validate();
  data.validate();
  const Index n = data.size(), h = data.images.extent(1), w = data.images.extent(2);
  if (n == 0) VITC_THROW(ArgumentError("train: the training set is empty"));
  check_labels(data.labels, model.num_classes());

  const Index batch_size = std::min(config.batch_size, n);
  const Index steps_per_epoch = n / batch_size;  // the incomplete last batch is dropped
  WarmupCosine schedule{config.lr, config.min_lr, config.lr * 1e-3,
                        static_cast<long>(std::llround(config.warmup_epochs * steps_per_epoch)),
                        std::max<long>(1, static_cast<long>(steps_per_epoch) * config.epochs)};
  schedule.validate();
  AdamW optimizer(config.adamw);
  std::mt19937_64 rng(config.seed);

  Tensor<float, 4> batch({batch_size, 1, h, w});
  Tensor<std::int32_t, 1> labels({batch_size});
  std::vector<Index> order(static_cast<std::size_t>(n));
  std::iota(order.begin(), order.end(), Index{0});

  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  const double total_steps = static_cast<double>(steps_per_epoch) * config.epochs;
  long global_step = 0;
  std::vector<EpochResult> results;
  for (int epoch = 1; epoch <= config.epochs; ++epoch) {
    const auto epoch_start = Clock::now();
    // Fisher-Yates with our own draw, so the order is the same with every standard library.
    for (Index i = n - 1; i > 0; --i) std::swap(order[i], order[uniform_index(rng, i + 1)]);
    LossStats epoch_stats;
    for (Index step = 0; step < steps_per_epoch; ++step, ++global_step) {
      const std::span<const Index> idx(order.data() + step * batch_size,
                                       static_cast<std::size_t>(batch_size));
      make_image_batch(data.images, idx, config.normalization, config.augment, &rng, batch.view());
      for (Index b = 0; b < batch_size; ++b) labels(b) = data.labels(idx[b]);
      const LossStats stats =
          model.compute_gradients(batch.cview(), labels.cview(), config.label_smoothing);
      if (!std::isfinite(stats.loss_sum))
        VITC_THROW(ArgumentError("training diverged: the loss is not finite at epoch " +
                                 std::to_string(epoch) + ", step " + std::to_string(step + 1)));
      const double lr = schedule(global_step);
      const auto slots = model.parameter_slots();
      optimizer.step(slots, lr);
      epoch_stats.loss_sum += stats.loss_sum;
      epoch_stats.correct += stats.correct;
      epoch_stats.rows += stats.rows;
      if (on_progress) {
        const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
        TrainProgress p;
        p.epoch = epoch;
        p.epochs = config.epochs;
        p.step = step + 1;
        p.steps_per_epoch = steps_per_epoch;
        p.loss = epoch_stats.loss_sum / static_cast<double>(epoch_stats.rows);
        p.accuracy =
            static_cast<double>(epoch_stats.correct) / static_cast<double>(epoch_stats.rows);
        p.lr = lr;
        p.images_per_second = static_cast<double>((global_step + 1) * batch_size) / elapsed;
        p.eta_seconds = elapsed / static_cast<double>(global_step + 1) *
                        (total_steps - static_cast<double>(global_step + 1));
        on_progress(p);
      }
    }
    EpochResult r;
    r.epoch = epoch;
    r.train_loss =
        epoch_stats.rows ? epoch_stats.loss_sum / static_cast<double>(epoch_stats.rows) : 0;
    r.train_accuracy = epoch_stats.rows ? static_cast<double>(epoch_stats.correct) /
                                              static_cast<double>(epoch_stats.rows)
                                        : 0;
    if (eval)
      r.eval_accuracy = evaluate_top1(model, *eval, config.normalization, config.eval_batch_size);
    r.seconds = std::chrono::duration<double>(Clock::now() - epoch_start).count();
    results.push_back(r);
    if (on_epoch) on_epoch(r);
  }
  return results;
}

}  // namespace vitc::model
