// SPDX-License-Identifier: Apache-2.0
#pragma once
// Calibration statistics of a ViT for the importance estimators that need data.
//
// Each function runs the float ViT (forward + backward, model/vit_backward.hpp) over calibration
// batches with the mean cross-entropy loss (no label smoothing) and returns, in a ViTWeights used
// as a container (same names and shapes as the weights), the true mean over all samples of:
//
//   mean_gradient        ∂L_b/∂w of each batch's mean loss, averaged over batches  (Taylor)
//   fisher_diagonal      (∂ℓ_i/∂w)² of each sample's own loss, one backward pass per sample,
//                        averaged over every sample of every batch  (HessianDiag<EmpiricalFisher>)
//   hutchinson_diagonal  v ⊙ Hv of the batch mean loss for `probes` Rademacher probes per batch,
//                        Hv by central differences of gradients with step eps (two forward +
//                        backward passes per probe), averaged over every probe  (HessianDiag<
//                        Hutchinson>)
//
// Sums are kept in double (importance/running_mean.hpp). Costs, in forward+backward passes:
// batches; samples (at batch size 1, the slowest per image); 2 · probes · batches. `progress`, if
// set, is called after each pass with (passes done, passes in total). The weights are not
// modified (Hutchinson perturbs a private copy). Throws what vit_forward throws for bad shapes and
// ArgumentError for an empty batch list or a non-finite gradient.

#include <cstdint>
#include <functional>
#include <random>
#include <span>
#include <vector>

#include "vitcompress/core/error.hpp"
#include "vitcompress/core/parallel_for.hpp"
#include "vitcompress/core/tensor.hpp"
#include "vitcompress/importance/hessian_diag.hpp"
#include "vitcompress/importance/running_mean.hpp"
#include "vitcompress/model/loss.hpp"
#include "vitcompress/model/vit_backward.hpp"
#include "vitcompress/model/vit_forward.hpp"
#include "vitcompress/model/vit_weights.hpp"
#include "vitcompress/model/vit_workspace.hpp"

namespace vitc::prune {

template <class T>
struct CalibrationBatch {
  TensorView<const T, 4> images;             // [B, C, H, W], normalized as for training
  TensorView<const std::int32_t, 1> labels;  // [B]
};

using CalibrationProgress = std::function<void(Index done, Index total)>;

namespace detail {

// Gradient of the mean loss of (images, labels) into `grads`.
template <class T>
void loss_gradient(const model::ViTWeights<T>& w, TensorView<const T, 4> images,
                   TensorView<const std::int32_t, 1> labels, model::ViTWeights<T>& grads,
                   model::ViTWorkspace<T>& ws, ThreadPool* pool) {
  Tensor<T, 2> logits({images.extent(0), w.config.num_classes});
  Tensor<T, 2> grad_logits({images.extent(0), w.config.num_classes});
  model::vit_forward(w, images, logits.view(), ws, pool, model::Pass::kTraining);
  (void)model::softmax_cross_entropy(logits.cview(), labels, 0.0, grad_logits.view());
  model::vit_backward(w, ws, grad_logits.cview(), grads, model::GradMode::kOverwrite, pool);
}

template <class T>
importance::RunningMeans slots_for(const model::ViTWeights<T>& w) {
  std::vector<Index> sizes;
  for (const auto& p : w.parameters()) sizes.push_back(static_cast<Index>(p.values.size()));
  return importance::RunningMeans(sizes);
}

template <class T>
model::ViTWeights<T> means_of(const importance::RunningMeans& acc, const model::ViTConfig& c) {
  model::ViTWeights<T> out(c);
  auto params = out.parameters();
  for (std::size_t i = 0; i < params.size(); ++i) acc.mean(i, params[i].values);
  return out;
}

template <class T>
void check_batches(std::span<const CalibrationBatch<T>> batches) {
  if (batches.empty()) VITC_THROW(ArgumentError("calibration: no batches"));
  for (std::size_t b = 0; b < batches.size(); ++b)
    if (batches[b].images.extent(0) != batches[b].labels.extent(0) ||
        batches[b].images.extent(0) == 0)
      VITC_THROW(ShapeError("calibration batch " + std::to_string(b) + ": " +
                            std::to_string(batches[b].images.extent(0)) + " images, " +
                            std::to_string(batches[b].labels.extent(0)) + " labels"));
}

}  // namespace detail

template <class T>
[[nodiscard]] model::ViTWeights<T> mean_gradient(const model::ViTWeights<T>& weights,
                                                 std::span<const CalibrationBatch<T>> batches,
                                                 ThreadPool* pool = nullptr,
                                                 const CalibrationProgress& progress = {}) {
  detail::check_batches(batches);
  auto acc = detail::slots_for(weights);
  model::ViTWeights<T> grads(weights.config);
  model::ViTWorkspace<T> ws;
  for (std::size_t b = 0; b < batches.size(); ++b) {
    detail::loss_gradient(weights, batches[b].images, batches[b].labels, grads, ws, pool);
    auto g = grads.parameters();
    for (std::size_t i = 0; i < g.size(); ++i) acc.add(i, g[i].values);
    if (progress) progress(static_cast<Index>(b + 1), static_cast<Index>(batches.size()));
  }
  return detail::means_of<T>(acc, weights.config);
}

template <class T>
[[nodiscard]] model::ViTWeights<T> fisher_diagonal(const model::ViTWeights<T>& weights,
                                                   std::span<const CalibrationBatch<T>> batches,
                                                   ThreadPool* pool = nullptr,
                                                   const CalibrationProgress& progress = {}) {
  detail::check_batches(batches);
  Index total = 0, done = 0;
  for (const auto& b : batches) total += b.images.extent(0);
  auto acc = detail::slots_for(weights);
  model::ViTWeights<T> grads(weights.config);
  model::ViTWorkspace<T> ws;
  for (const auto& batch : batches)
    for (Index s = 0; s < batch.images.extent(0); ++s) {
      detail::loss_gradient(weights, batch.images.slice(0, s, s + 1),
                            batch.labels.slice(0, s, s + 1), grads, ws, pool);
      auto g = grads.parameters();
      for (std::size_t i = 0; i < g.size(); ++i)
        importance::EmpiricalFisher::accumulate(acc, i, g[i].values);
      if (progress) progress(++done, total);
    }
  return detail::means_of<T>(acc, weights.config);
}

template <class T>
[[nodiscard]] model::ViTWeights<T> hutchinson_diagonal(const model::ViTWeights<T>& weights,
                                                       std::span<const CalibrationBatch<T>> batches,
                                                       int probes = 1, double eps = 1e-3,
                                                       std::uint64_t seed = 0,
                                                       ThreadPool* pool = nullptr,
                                                       const CalibrationProgress& progress = {}) {
  detail::check_batches(batches);
  if (probes < 1) VITC_THROW(ArgumentError("hutchinson_diagonal: probes must be >= 1"));
  auto acc = detail::slots_for(weights);
  model::ViTWeights<T> work = weights;  // perturbed in place, restored after each probe
  model::ViTWeights<T> grads(weights.config);
  model::ViTWorkspace<T> ws;
  std::vector<std::span<T>> params;
  for (auto& p : work.parameters()) params.push_back(p.values);
  std::mt19937_64 rng(seed);
  const Index total = 2 * probes * static_cast<Index>(batches.size());
  Index done = 0;
  for (const auto& batch : batches)
    for (int k = 0; k < probes; ++k) {
      auto gradient = [&](std::span<const std::span<T>> out) {
        detail::loss_gradient(work, batch.images, batch.labels, grads, ws, pool);
        auto g = grads.parameters();
        for (std::size_t i = 0; i < g.size(); ++i)
          std::copy(g[i].values.begin(), g[i].values.end(), out[i].begin());
        if (progress) progress(++done, total);
      };
      importance::hutchinson_probe(std::span<const std::span<T>>(params), gradient, rng, eps, acc);
    }
  return detail::means_of<T>(acc, weights.config);
}

}  // namespace vitc::prune
