// SPDX-License-Identifier: Apache-2.0
#pragma once
// Calibration observers: they watch the values a tensor takes on calibration data and choose its
// quantization parameters.
//
// Why several: the min-max range is exact but a single outlier stretches the step for every other
// value; long-tailed activations (post-GELU, post-softmax, the residual stream) lose most of their
// resolution to it. Clipping trades saturation of the rare large values for a finer step
// everywhere else; log2 levels (quant/scheme.hpp) are the other answer for post-softmax.
//
//   MinMaxObserver               running min and max of every group (PyTorch MinMaxObserver).
//   MovingAverageMinMaxObserver  per batch min/max, then lo ← lo + m·(batch_lo − lo) (likewise
//                                hi); the first batch initialises (PyTorch's averaging_constant,
//                                FQ-ViT "ema"). Default m = 0.1.
//   PercentileObserver           per batch, the lower and upper percentile of each group's values
//                                (nearest-rank on the sorted batch: the values of rank
//                                floor((1 − p)·(n − 1)) and ceil(p·(n − 1))), averaged over
//                                batches (FQ-ViT's percentile observer, with a plain mean in place
//                                of its EMA). Default p = 99.99%.
//   MseObserver                  the exact min-max plus a uniform sample of each group's values
//                                (reservoir sampling, Vitter's algorithm R, fixed seed, at most
//                                max_samples per group); params() tries the ranges α·[lo, hi] for
//                                α = 1, 0.99, ..., 0.20 and keeps the one whose fake quantization
//                                of the sample has the least squared error (OMSE-style clipping
//                                search). On a weight, observed once, the sample is the whole
//                                group when it is no larger than max_samples.
//
// Every observer satisfies the Observer concept: observe(x, what) on a 2-D view (any strides),
// params(scheme, what) -> TensorQuantParams, and empty(). The granularity is fixed at
// construction; the group count of the first observed tensor must be kept by later ones
// (ShapeError otherwise). NaN or infinity in observed data is an ArgumentError naming `what`.
// params() before any observation is an ArgumentError. Observers are not thread-safe.

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <variant>
#include <vector>

#include "vitcompress/core/error.hpp"
#include "vitcompress/core/tensor.hpp"
#include "vitcompress/quant/granularity.hpp"
#include "vitcompress/quant/quantizer.hpp"
#include "vitcompress/quant/scheme.hpp"

namespace vitc::quant {

template <class O>
concept Observer = requires(O& o, const O& co, TensorView<const float, 2> x,
                            const std::string& what, const SchemeSpec& s) {
  o.observe(x, what);
  { co.params(s, what) } -> std::same_as<TensorQuantParams>;
  { co.empty() } -> std::convertible_to<bool>;
};

namespace detail {

inline void check_group_count(Index& expected, Index got, const std::string& what) {
  if (expected < 0) {
    expected = got;
  } else if (expected != got) {
    VITC_THROW(ShapeError(what + ": observed a tensor with " + std::to_string(got) +
                          " quantization groups after one with " + std::to_string(expected)));
  }
}

inline void check_observed(bool empty, const std::string& what) {
  if (empty) VITC_THROW(ArgumentError(what + ": the observer has seen no data"));
}

// Values of each group of x, appended to per-group vectors.
inline void gather_groups(const TensorView<const float, 2>& x, const GranularitySpec& g,
                          std::vector<std::vector<float>>& out) {
  for_each_group_run(g, x.extent(0), x.extent(1), [&](Index r, Index c0, Index c1, Index grp) {
    const float* row = x.data() + r * x.stride(0);
    auto& v = out[static_cast<std::size_t>(grp)];
    for (Index c = c0; c < c1; ++c) v.push_back(row[c * x.stride(1)]);
  });
}

}  // namespace detail

class MinMaxObserver {
 public:
  explicit MinMaxObserver(GranularitySpec granularity = {}) : granularity_(granularity) {}

  void observe(const TensorView<const float, 2>& x, const std::string& what) {
    const auto batch = group_ranges(x, granularity_, what);
    detail::check_group_count(groups_, static_cast<Index>(batch.size()), what);
    if (ranges_.empty()) {
      ranges_ = batch;
    } else {
      for (std::size_t g = 0; g < batch.size(); ++g) {
        ranges_[g].lo = std::min(ranges_[g].lo, batch[g].lo);
        ranges_[g].hi = std::max(ranges_[g].hi, batch[g].hi);
      }
    }
  }
  [[nodiscard]] const std::vector<Range>& ranges() const noexcept { return ranges_; }
  [[nodiscard]] bool empty() const noexcept { return ranges_.empty(); }
  [[nodiscard]] TensorQuantParams params(const SchemeSpec& s, const std::string& what) const {
    detail::check_observed(empty(), what);
    return params_from_ranges({s, granularity_}, ranges_, what);
  }

 private:
  GranularitySpec granularity_;
  Index groups_ = -1;
  std::vector<Range> ranges_;
};

class MovingAverageMinMaxObserver {
 public:
  explicit MovingAverageMinMaxObserver(GranularitySpec granularity = {}, double momentum = 0.1)
      : granularity_(granularity), momentum_(momentum) {
    if (!(momentum > 0.0 && momentum <= 1.0))
      VITC_THROW(ArgumentError("MovingAverageMinMaxObserver: momentum " + std::to_string(momentum) +
                               " outside (0, 1]"));
  }

  void observe(const TensorView<const float, 2>& x, const std::string& what) {
    const auto batch = group_ranges(x, granularity_, what);
    detail::check_group_count(groups_, static_cast<Index>(batch.size()), what);
    if (ranges_.empty()) {
      ranges_ = batch;
      return;
    }
    const auto m = static_cast<float>(momentum_);
    for (std::size_t g = 0; g < batch.size(); ++g) {
      ranges_[g].lo += m * (batch[g].lo - ranges_[g].lo);
      ranges_[g].hi += m * (batch[g].hi - ranges_[g].hi);
    }
  }
  [[nodiscard]] const std::vector<Range>& ranges() const noexcept { return ranges_; }
  [[nodiscard]] bool empty() const noexcept { return ranges_.empty(); }
  [[nodiscard]] TensorQuantParams params(const SchemeSpec& s, const std::string& what) const {
    detail::check_observed(empty(), what);
    return params_from_ranges({s, granularity_}, ranges_, what);
  }

 private:
  GranularitySpec granularity_;
  double momentum_;
  Index groups_ = -1;
  std::vector<Range> ranges_;
};

class PercentileObserver {
 public:
  // `percentile` in percent, in (50, 100].
  explicit PercentileObserver(GranularitySpec granularity = {}, double percentile = 99.99)
      : granularity_(granularity), fraction_(percentile / 100.0) {
    if (!(percentile > 50.0 && percentile <= 100.0))
      VITC_THROW(ArgumentError("PercentileObserver: percentile " + std::to_string(percentile) +
                               " outside (50, 100]"));
  }

  void observe(const TensorView<const float, 2>& x, const std::string& what) {
    granularity_.validate(what);
    check_finite(x, what);
    const Index n = granularity_.num_groups(x.extent(0), x.extent(1));
    detail::check_group_count(groups_, n, what);
    std::vector<std::vector<float>> values(static_cast<std::size_t>(n));
    detail::gather_groups(x, granularity_, values);
    if (sums_.empty()) sums_.assign(static_cast<std::size_t>(n), {0.0, 0.0});
    for (std::size_t g = 0; g < values.size(); ++g) {
      auto& v = values[g];
      if (v.empty()) continue;
      const auto last = static_cast<double>(v.size() - 1);
      const auto lo_rank = static_cast<std::size_t>(std::floor((1.0 - fraction_) * last));
      const auto hi_rank = static_cast<std::size_t>(std::ceil(fraction_ * last));
      std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(hi_rank), v.end());
      const float hi = v[hi_rank];
      std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(lo_rank), v.end());
      const float lo = v[lo_rank];
      sums_[g].first += lo;
      sums_[g].second += hi;
    }
    ++batches_;
  }
  [[nodiscard]] std::vector<Range> ranges() const {
    std::vector<Range> out;
    for (const auto& [lo, hi] : sums_)
      out.push_back({static_cast<float>(lo / static_cast<double>(batches_)),
                     static_cast<float>(hi / static_cast<double>(batches_))});
    return out;
  }
  [[nodiscard]] bool empty() const noexcept { return batches_ == 0; }
  [[nodiscard]] TensorQuantParams params(const SchemeSpec& s, const std::string& what) const {
    detail::check_observed(empty(), what);
    const auto r = ranges();
    return params_from_ranges({s, granularity_}, r, what);
  }

 private:
  GranularitySpec granularity_;
  double fraction_;
  Index groups_ = -1;
  Index batches_ = 0;
  std::vector<std::pair<double, double>> sums_;
};

class MseObserver {
 public:
  static constexpr Index kDefaultMaxSamples = Index{1} << 15;

  explicit MseObserver(GranularitySpec granularity = {}, Index max_samples = kDefaultMaxSamples,
                       std::uint64_t seed = 0x5eed)
      : granularity_(granularity), max_samples_(max_samples), rng_(seed) {
    if (max_samples < 1) VITC_THROW(ArgumentError("MseObserver: max_samples must be >= 1"));
  }

  void observe(const TensorView<const float, 2>& x, const std::string& what) {
    const auto batch = group_ranges(x, granularity_, what);  // validates and checks finiteness
    detail::check_group_count(groups_, static_cast<Index>(batch.size()), what);
    if (ranges_.empty()) {
      ranges_ = batch;
      samples_.resize(batch.size());
      seen_.assign(batch.size(), 0);
    } else {
      for (std::size_t g = 0; g < batch.size(); ++g) {
        ranges_[g].lo = std::min(ranges_[g].lo, batch[g].lo);
        ranges_[g].hi = std::max(ranges_[g].hi, batch[g].hi);
      }
    }
    for_each_group_run(granularity_, x.extent(0), x.extent(1),
                       [&](Index r, Index c0, Index c1, Index grp) {
                         const float* row = x.data() + r * x.stride(0);
                         const auto g = static_cast<std::size_t>(grp);
                         for (Index c = c0; c < c1; ++c) add_sample(g, row[c * x.stride(1)]);
                       });
  }

  [[nodiscard]] bool empty() const noexcept { return ranges_.empty(); }
  [[nodiscard]] const std::vector<Range>& ranges() const noexcept { return ranges_; }

  // One clipping search per group (see search()).
  [[nodiscard]] TensorQuantParams params(const SchemeSpec& s, const std::string& what) const {
    detail::check_observed(empty(), what);
    s.validate(what);
    TensorQuantParams p{s, granularity_, {}, {}};
    for (std::size_t g = 0; g < ranges_.size(); ++g) {
      const QuantParams best = search(ranges_[g], samples_[g], s, what);
      p.scales.push_back(best.scale);
      p.zero_points.push_back(best.zero_point);
    }
    return p;
  }

  // The search on one group: the params of the range α·[lo, hi], α in {1, 0.99, ..., 0.20}, whose
  // fake quantization of `sample` has the least squared error (the first on ties, so α = 1 wins
  // when clipping does not help). Exposed for weights, whose values need no sampling.
  [[nodiscard]] static QuantParams search(Range range, const std::vector<float>& sample,
                                          const SchemeSpec& s, const std::string& what) {
    QuantParams best = params_from_range(range, s, what);
    if (!s.is_integer() || sample.empty()) return best;
    double best_err = std::numeric_limits<double>::infinity();
    visit_scheme(s.kind, [&](auto k) {
      using Impl = detail::SchemeImpl<decltype(k)::value>;
      for (int step = 0; step <= 80; ++step) {
        const float alpha = 1.0f - 0.01f * static_cast<float>(step);
        const QuantParams p = params_from_range({alpha * range.lo, alpha * range.hi}, s, what);
        double err = 0.0;
        for (float v : sample) {
          const double d = static_cast<double>(Impl::fake(v, p, s.bits)) - v;
          err += d * d;
        }
        if (err < best_err) {
          best_err = err;
          best = p;
        }
      }
    });
    return best;
  }

 private:
  void add_sample(std::size_t g, float v) {
    auto& s = samples_[g];
    const std::uint64_t n = seen_[g]++;
    if (static_cast<Index>(s.size()) < max_samples_) {
      s.push_back(v);
    } else {
      const std::uint64_t j = rng_() % (n + 1);
      if (j < static_cast<std::uint64_t>(max_samples_)) s[j] = v;
    }
  }

  GranularitySpec granularity_;
  Index max_samples_;
  std::mt19937_64 rng_;
  Index groups_ = -1;
  std::vector<Range> ranges_;
  std::vector<std::vector<float>> samples_;
  std::vector<std::uint64_t> seen_;
};

// Observers chosen at run time (configurations).
enum class ObserverKind : int { kMinMax, kMovingAverage, kPercentile, kMse };

[[nodiscard]] inline const char* to_string(ObserverKind kind) noexcept {
  switch (kind) {
    case ObserverKind::kMinMax:
      return "minmax";
    case ObserverKind::kMovingAverage:
      return "ema";
    case ObserverKind::kPercentile:
      return "percentile";
    case ObserverKind::kMse:
      return "mse";
  }
  return "unknown";
}

[[nodiscard]] inline ObserverKind observer_kind_from_string(const std::string& name,
                                                            const std::string& what = "observer") {
  for (ObserverKind k : {ObserverKind::kMinMax, ObserverKind::kMovingAverage,
                         ObserverKind::kPercentile, ObserverKind::kMse})
    if (name == to_string(k)) return k;
  VITC_THROW(
      ArgumentError(what + ": unknown observer '" + name + "' (minmax, ema, percentile, mse)"));
}

struct ObserverSpec {
  ObserverKind kind = ObserverKind::kMinMax;
  double momentum = 0.1;                                // kMovingAverage
  double percentile = 99.99;                            // kPercentile, in percent
  Index max_samples = MseObserver::kDefaultMaxSamples;  // kMse
  friend bool operator==(const ObserverSpec&, const ObserverSpec&) = default;
};

using AnyObserver =
    std::variant<MinMaxObserver, MovingAverageMinMaxObserver, PercentileObserver, MseObserver>;

[[nodiscard]] inline AnyObserver make_observer(const ObserverSpec& spec,
                                               const GranularitySpec& granularity) {
  switch (spec.kind) {
    case ObserverKind::kMinMax:
      return MinMaxObserver(granularity);
    case ObserverKind::kMovingAverage:
      return MovingAverageMinMaxObserver(granularity, spec.momentum);
    case ObserverKind::kPercentile:
      return PercentileObserver(granularity, spec.percentile);
    case ObserverKind::kMse:
      return MseObserver(granularity, spec.max_samples);
  }
  return MinMaxObserver(granularity);
}

inline void observe(AnyObserver& o, const TensorView<const float, 2>& x, const std::string& what) {
  std::visit([&](auto& obs) { obs.observe(x, what); }, o);
}
[[nodiscard]] inline TensorQuantParams observer_params(const AnyObserver& o, const SchemeSpec& s,
                                                       const std::string& what) {
  return std::visit([&](const auto& obs) { return obs.params(s, what); }, o);
}

}  // namespace vitc::quant
