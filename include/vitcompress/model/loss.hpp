// SPDX-License-Identifier: Apache-2.0
#pragma once
// Softmax cross-entropy with label smoothing, and its gradient, over a batch of logits.
//
// For one row z with label y, C classes and smoothing e, the target is t = (1 - e)·onehot(y) + e/C
// and the loss is -Σ t_c · log softmax(z)_c; the gradient of the *mean* loss over B rows is
// (softmax(z) - t) / B. Computed with the max subtracted, in the logits' precision.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "vitcompress/core/error.hpp"
#include "vitcompress/core/tensor.hpp"

namespace vitc::model {

struct LossStats {
  double loss_sum = 0;  // summed over the rows (divide by `rows` for the mean)
  Index correct = 0;    // rows whose arg-max equals the label
  Index rows = 0;
};

// Validates labels against the number of classes; throws ArgumentError naming the row.
template <class L>
void check_labels(TensorView<const L, 1> labels, Index num_classes) {
  for (Index i = 0; i < labels.extent(0); ++i)
    if (labels(i) < 0 || static_cast<Index>(labels(i)) >= num_classes)
      VITC_THROW(ArgumentError("labels[" + std::to_string(i) +
                               "] = " + std::to_string(static_cast<long long>(labels(i))) +
                               " is outside [0, " + std::to_string(num_classes) + ")"));
}

// Loss and accuracy of a batch; if `grad` is non-empty it receives d(mean loss)/d(logits).
template <class T, class L>
LossStats softmax_cross_entropy(TensorView<const T, 2> logits, TensorView<const L, 1> labels,
                                double label_smoothing, TensorView<T, 2> grad = {}) {
  const Index rows = logits.extent(0), classes = logits.extent(1);
  if (labels.extent(0) != rows)
    VITC_THROW(ShapeError("labels: " + std::to_string(labels.extent(0)) + " labels for " +
                          std::to_string(rows) + " rows of logits"));
  if (!(label_smoothing >= 0 && label_smoothing < 1))
    VITC_THROW(
        ArgumentError("label_smoothing must be in [0, 1), got " + std::to_string(label_smoothing)));
  if (grad.size() != 0) expect_shape(TensorView<const T, 2>(grad), logits.shape(), "loss gradient");
  check_labels(labels, classes);

  LossStats stats;
  stats.rows = rows;
  const double off = label_smoothing / static_cast<double>(classes);
  const double on = 1.0 - label_smoothing + off;
  for (Index r = 0; r < rows; ++r) {
    const auto z = logits[r];
    Index arg = 0;
    for (Index c = 1; c < classes; ++c)
      if (z(c) > z(arg)) arg = c;
    const double zmax = static_cast<double>(z(arg));
    double sum = 0, weighted = 0;
    for (Index c = 0; c < classes; ++c) {
      sum += std::exp(static_cast<double>(z(c)) - zmax);
      weighted +=
          (c == static_cast<Index>(labels(r)) ? on : off) * (static_cast<double>(z(c)) - zmax);
    }
    const double log_sum = std::log(sum);
    stats.loss_sum += log_sum - weighted;  // Σ t = 1, so -Σ t·(z - zmax - log_sum)
    if (arg == static_cast<Index>(labels(r))) ++stats.correct;
    if (grad.size() != 0) {
      for (Index c = 0; c < classes; ++c) {
        const double p = std::exp(static_cast<double>(z(c)) - zmax - log_sum);
        const double t = c == static_cast<Index>(labels(r)) ? on : off;
        grad(r, c) = static_cast<T>((p - t) / static_cast<double>(rows));
      }
    }
  }
  return stats;
}

}  // namespace vitc::model
