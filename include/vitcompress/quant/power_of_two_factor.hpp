// SPDX-License-Identifier: Apache-2.0
#pragma once
// Power-of-Two Factor (PTF): outlier-aware quantization of the residual stream / LayerNorm inputs.
//
// Why: the residual stream of a ViT has a few channels that are systematically much larger than
// the rest (PackQViT's "outlier channels"). One per-tensor scale wide enough for them leaves the
// ordinary channels with a handful of levels; per-channel scales fix that but an integer
// LayerNorm must then add values of different scales. FQ-ViT's answer (ANCHORS.md §3.3,
// `megvii-research/FQ-ViT:models/ptq/observer/ptf.py`) keeps ONE base scale s and ONE zero point z
// and gives each channel c a power-of-two factor 2^α_c, α_c in {0, 1, 2, 3}:
//
//   s8 = (max' − min') / (2^b − 1)   the per-tensor min-max scale (unsigned, b bits), over the
//                                     range widened to include 0: min' = min(min, 0),
//                                     max' = max(max, 0)
//   s  = s8 / 8,   z = clamp(−round(min' / s8), 0, 2^b − 1)
//   α_c = argmin over α in {0..3} of Σ_rows (x_rc − x̂_rc(s·2^α))²  (first minimum on ties)
//   q_rc = clamp(round(x_rc / (s·2^α_c)) + z, 0, 2^b − 1),   x̂_rc = s·2^α_c·(q_rc − z)
//
// so that the integer LayerNorm consumes the single integer tensor (q_rc − z)·2^α_c (a left
// shift) at the single scale s. With all α_c = 3 this is the plain asymmetric per-tensor
// quantizer.
//
// PtfObserver watches calibration activations [rows, C] (channels along axis 1): the exact global
// min/max and a uniform sample of at most max_rows rows (reservoir sampling, fixed seed) for the
// per-channel error. params() gives a PtfParams; as_tensor_params() expresses it as per-channel
// (axis 1) asymmetric TensorQuantParams for fake_quantize(). NaN/inf in observed data is an
// ArgumentError naming the tensor.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "vitcompress/core/error.hpp"
#include "vitcompress/core/tensor.hpp"
#include "vitcompress/quant/granularity.hpp"
#include "vitcompress/quant/quantizer.hpp"
#include "vitcompress/quant/scheme.hpp"

namespace vitc::quant {

inline constexpr int kPtfMaxAlpha = 3;

struct PtfParams {
  int bits = 8;
  float base_scale = 1.0f;  // s
  std::int32_t zero_point = 0;
  std::vector<std::uint8_t> alpha;  // α_c in [0, 3], one per channel

  // Per-channel asymmetric parameters: scale_c = s·2^α_c, zero point z for every channel.
  [[nodiscard]] TensorQuantParams as_tensor_params() const {
    TensorQuantParams p{{SchemeKind::kAsymmetric, bits},
                        {GranularityKind::kChannel, 1, 0},
                        {},
                        std::vector<std::int32_t>(alpha.size(), zero_point)};
    for (std::uint8_t a : alpha) p.scales.push_back(std::ldexp(base_scale, a));
    return p;
  }
};

class PtfObserver {
 public:
  explicit PtfObserver(Index max_rows = 4096, std::uint64_t seed = 0x97f)
      : max_rows_(max_rows), rng_(seed) {
    if (max_rows < 1) VITC_THROW(ArgumentError("PtfObserver: max_rows must be >= 1"));
  }

  void observe(const TensorView<const float, 2>& x, const std::string& what) {
    const auto r = group_ranges(x, {}, what)[0];  // checks finiteness
    const Index cols = x.extent(1);
    if (channels_ < 0) {
      channels_ = cols;
      range_ = r;
    } else if (channels_ != cols) {
      VITC_THROW(ShapeError(what + ": observed " + std::to_string(cols) + " channels after " +
                            std::to_string(channels_)));
    }
    range_.lo = std::min(range_.lo, r.lo);
    range_.hi = std::max(range_.hi, r.hi);
    for (Index i = 0; i < x.extent(0); ++i) {
      const std::uint64_t n = rows_seen_++;
      Index slot = -1;
      if (kept_ < max_rows_) {
        slot = kept_++;
        rows_.resize(static_cast<std::size_t>(kept_ * cols));
      } else {
        const std::uint64_t j = rng_() % (n + 1);
        if (j < static_cast<std::uint64_t>(max_rows_)) slot = static_cast<Index>(j);
      }
      if (slot < 0) continue;
      const float* src = x.data() + i * x.stride(0);
      float* dst = rows_.data() + slot * cols;
      for (Index c = 0; c < cols; ++c) dst[c] = src[c * x.stride(1)];
    }
  }

  [[nodiscard]] bool empty() const noexcept { return channels_ < 0; }

  [[nodiscard]] PtfParams params(int bits, const std::string& what) const {
    if (empty()) VITC_THROW(ArgumentError(what + ": the PTF observer has seen no data"));
    const SchemeSpec s{SchemeKind::kAsymmetric, bits};
    s.validate(what);
    const auto qmax = static_cast<float>(s.qmax());
    PtfParams p;
    p.bits = bits;
    // The range is widened to include 0 (as params_from_range does for Asymmetric), so that 0 is
    // exactly representable and a one-signed range is still covered.
    const float lo = std::min(range_.lo, 0.0f), hi = std::max(range_.hi, 0.0f);
    float s8 = (hi - lo) / qmax;
    if (!(s8 > 1e-30f) || !std::isfinite(s8)) s8 = 1.0f;
    p.base_scale = s8 / 8.0f;
    p.zero_point =
        static_cast<std::int32_t>(std::min(std::max(-std::nearbyint(lo / s8), 0.0f), qmax));
    p.alpha.assign(static_cast<std::size_t>(channels_), kPtfMaxAlpha);
    const Index cols = channels_;
    for (Index c = 0; c < cols; ++c) {
      double best = std::numeric_limits<double>::infinity();
      for (int a = 0; a <= kPtfMaxAlpha; ++a) {
        const QuantParams qp{std::ldexp(p.base_scale, a), p.zero_point};
        double err = 0.0;
        for (Index r = 0; r < kept_; ++r) {
          const float v = rows_[static_cast<std::size_t>(r * cols + c)];
          const double d =
              static_cast<double>(detail::SchemeImpl<SchemeKind::kAsymmetric>::fake(v, qp, bits)) -
              v;
          err += d * d;
        }
        if (err < best) {
          best = err;
          p.alpha[static_cast<std::size_t>(c)] = static_cast<std::uint8_t>(a);
        }
      }
    }
    return p;
  }

 private:
  Index max_rows_;
  std::mt19937_64 rng_;
  Index channels_ = -1;
  Range range_{};
  Index kept_ = 0;
  std::uint64_t rows_seen_ = 0;
  std::vector<float> rows_;
};

}  // namespace vitc::quant
