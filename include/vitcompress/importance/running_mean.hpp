// SPDX-License-Identifier: Apache-2.0
#pragma once
// Running sums and means of per-parameter statistics over calibration data.
//
// Importance estimators that look at gradients need an average over many calibration samples:
// Taylor the mean gradient, the empirical Fisher the mean of squared per-sample gradients,
// Hutchinson the mean of v ⊙ Hv over random probes. RunningMeans keeps, for each of a fixed list of
// tensors ("slots", e.g. one per parameter), the sum of every sample added so far in double
// precision and the number of samples, so that mean() is the true arithmetic mean of all samples
// (not an exponential average, not the last sample: Torch-Pruning 1.6.1's Hessian accumulator
// overwrites its sum on every call, which makes its "mean" the last sample's, see ANCHORS.md §2.3).
//
// Samples are spans of T or const T (any arithmetic T). Each slot counts its own samples: add a
// sample to every slot for a whole-model sample, or only to some. Samples are flat, contiguous
// spans of the slot's size; every value must be finite. Cost: one double per element of every slot;
// O(size) per add. Not thread-safe.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <span>
#include <string>
#include <vector>

#include "vitcompress/core/error.hpp"
#include "vitcompress/core/tensor.hpp"

namespace vitc::importance {

class RunningMeans {
 public:
  RunningMeans() = default;

  // One slot per entry of `sizes` (elements per slot, >= 0).
  explicit RunningMeans(const std::vector<Index>& sizes) {
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      if (sizes[i] < 0)
        VITC_THROW(
            ArgumentError("RunningMeans: slot " + std::to_string(i) + " has a negative size"));
      sums_.emplace_back(static_cast<std::size_t>(sizes[i]), 0.0);
    }
    counts_.assign(sizes.size(), 0);
  }

  [[nodiscard]] std::size_t slots() const noexcept { return sums_.size(); }
  [[nodiscard]] Index size(std::size_t slot) const {
    check_slot(slot);
    return static_cast<Index>(sums_[slot].size());
  }
  // Samples added to `slot` so far.
  [[nodiscard]] Index count(std::size_t slot) const {
    check_slot(slot);
    return counts_[slot];
  }

  // sum += x
  template <class T>
  void add(std::size_t slot, std::span<T> x) {
    std::vector<double>& s = target(slot, x.size(), "add");
    check_finite(x, slot, "add");
    for (std::size_t i = 0; i < x.size(); ++i) s[i] += static_cast<double>(x[i]);
    ++counts_[slot];
  }

  // sum += x ⊙ x (the empirical Fisher's squared per-sample gradients)
  template <class T>
  void add_squared(std::size_t slot, std::span<T> x) {
    std::vector<double>& s = target(slot, x.size(), "add_squared");
    check_finite(x, slot, "add_squared");
    for (std::size_t i = 0; i < x.size(); ++i) {
      const double v = static_cast<double>(x[i]);
      s[i] += v * v;
    }
    ++counts_[slot];
  }

  // sum += a ⊙ b (Hutchinson's v ⊙ Hv)
  template <class A, class B>
  void add_product(std::size_t slot, std::span<A> a, std::span<B> b) {
    if (a.size() != b.size())
      VITC_THROW(ShapeError("RunningMeans::add_product: slot " + std::to_string(slot) + ": " +
                            std::to_string(a.size()) + " and " + std::to_string(b.size()) +
                            " elements"));
    std::vector<double>& s = target(slot, a.size(), "add_product");
    check_finite(a, slot, "add_product");
    check_finite(b, slot, "add_product");
    for (std::size_t i = 0; i < a.size(); ++i)
      s[i] += static_cast<double>(a[i]) * static_cast<double>(b[i]);
    ++counts_[slot];
  }

  // The running sum of `slot`.
  [[nodiscard]] std::span<const double> sum(std::size_t slot) const {
    check_slot(slot);
    return sums_[slot];
  }

  // out = sum / count. Throws ArgumentError when no sample reached the slot.
  template <class T>
  void mean(std::size_t slot, std::span<T> out) const {
    check_slot(slot);
    if (out.size() != sums_[slot].size())
      VITC_THROW(ShapeError("RunningMeans::mean: slot " + std::to_string(slot) + " has " +
                            std::to_string(sums_[slot].size()) + " elements, the output " +
                            std::to_string(out.size())));
    if (counts_[slot] == 0)
      VITC_THROW(
          ArgumentError("RunningMeans::mean: slot " + std::to_string(slot) + " has no samples"));
    const double inv = 1.0 / static_cast<double>(counts_[slot]);
    for (std::size_t i = 0; i < out.size(); ++i) out[i] = static_cast<T>(sums_[slot][i] * inv);
  }

  [[nodiscard]] std::vector<double> mean(std::size_t slot) const {
    std::vector<double> out(static_cast<std::size_t>(size(slot)));
    mean(slot, std::span<double>(out));
    return out;
  }

  // Forgets every sample (sizes stay).
  void reset() {
    for (auto& s : sums_) std::fill(s.begin(), s.end(), 0.0);
    std::fill(counts_.begin(), counts_.end(), Index{0});
  }

 private:
  void check_slot(std::size_t slot) const {
    if (slot >= sums_.size())
      VITC_THROW(ArgumentError("RunningMeans: slot " + std::to_string(slot) + " out of range (" +
                               std::to_string(sums_.size()) + " slots)"));
  }
  std::vector<double>& target(std::size_t slot, std::size_t n, const char* what) {
    check_slot(slot);
    if (n != sums_[slot].size())
      VITC_THROW(ShapeError(std::string("RunningMeans::") + what + ": slot " +
                            std::to_string(slot) + " has " + std::to_string(sums_[slot].size()) +
                            " elements, the sample " + std::to_string(n)));
    return sums_[slot];
  }
  // Validates the whole sample first, so that a rejected sample leaves the sums untouched.
  template <class T>
  static void check_finite(std::span<T> x, std::size_t slot, const char* what) {
    for (const T& v : x)
      if (!std::isfinite(static_cast<double>(v)))
        VITC_THROW(ArgumentError(std::string("RunningMeans::") + what + ": slot " +
                                 std::to_string(slot) + ": the sample holds a NaN or an infinity"));
  }

  std::vector<std::vector<double>> sums_;
  std::vector<Index> counts_;
};

}  // namespace vitc::importance
