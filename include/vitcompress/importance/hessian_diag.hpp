// SPDX-License-Identifier: Apache-2.0
#pragma once
// Second-order importance: Optimal Brain Damage with a diagonal Hessian.
//
// At a minimum of the loss the gradient vanishes and removing weights w changes the loss by about
// ½ Σ h·w², h being the diagonal of the Hessian (LeCun et al. 1989). HessianDiag<Policy>
// contributes ½·w²·max(h, 0) per element. The clamp matters because an *estimate* of h can be
// negative (a direction of negative curvature, or sampling noise); such an element is scored zero,
// i.e. as removable, and scores stay non-negative for the normalizers. The statistic h comes from
// one of two policies:
//
//   EmpiricalFisher  h ≈ mean over samples of (∂ℓ_i/∂w)², the squared gradient of each sample's own
//                    loss (a batch of one). Needs one backward pass per sample; positive by
//                    construction; equals the Gauss-Newton Hessian only where the model fits the
//                    labels. Torch-Pruning's GroupHessianImportance intends this, but at v1.6.1 its
//                    accumulator keeps only the last sample (ANCHORS.md §2.3); RunningMeans keeps
//                    the true mean, and tests pin it.
//   Hutchinson       h = E[v ⊙ Hv] for Rademacher v (entries ±1, so E[v vᵀ] = I), which is unbiased
//                    for the true diagonal; each probe costs two gradient evaluations because the
//                    Hessian-vector product is a central finite difference of gradients,
//                    Hv ≈ (∇L(w + εv) − ∇L(w − εv)) / 2ε, exact for a quadratic loss and O(ε²)
//                    off otherwise. The variance of one probe is Σ_{j≠i} H_ij², so it needs many
//                    probes where the Hessian is far from diagonal.
//
// Both policies accumulate into a RunningMeans (running_mean.hpp), one slot per parameter tensor;
// the mean of each slot is the statistic to pass with the weights.

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "vitcompress/core/error.hpp"
#include "vitcompress/importance/running_mean.hpp"

namespace vitc::importance {

struct EmpiricalFisher {
  static constexpr std::string_view name() noexcept { return "fisher"; }
  // Adds one per-sample gradient to the slot (sum of squares).
  template <class T>
  static void accumulate(RunningMeans& acc, std::size_t slot, std::span<T> per_sample_gradient) {
    acc.add_squared(slot, per_sample_gradient);
  }
};

struct Hutchinson {
  static constexpr std::string_view name() noexcept { return "hutchinson"; }
  // Adds one probe: the probe vector v and the Hessian-vector product Hv (sum of v ⊙ Hv).
  template <class A, class B>
  static void accumulate(RunningMeans& acc, std::size_t slot, std::span<A> v, std::span<B> hv) {
    acc.add_product(slot, v, hv);
  }
};

template <class Policy>
concept HessianPolicy = std::same_as<Policy, EmpiricalFisher> || std::same_as<Policy, Hutchinson>;

template <HessianPolicy Policy>
struct HessianDiag {
  using Estimator = Policy;
  static constexpr bool kNeedsStatistic = true;  // the Hessian-diagonal estimate h
  static constexpr bool kSigned = false;
  static constexpr std::string_view name() noexcept {
    return std::same_as<Policy, EmpiricalFisher> ? "hessian-fisher" : "hessian-hutchinson";
  }
  static constexpr double contribution(double w, double h) noexcept {
    return 0.5 * w * w * (h > 0 ? h : 0.0);
  }
};

// One Hutchinson probe over a set of parameter tensors.
//
// Draws v with independent ±1 entries from `rng` (one bit per element, 64 per draw, so a seed gives
// the same probe everywhere), evaluates `gradient` at w + εv and at w − εv, and adds v ⊙ Hv with
// Hv = (g₊ − g₋) / 2ε to slot i of `acc` for params[i]. `gradient(grads)` receives one writable
// span per parameter (same sizes as `params`) and must fill it with ∇L at the parameters' current
// values. The parameters are restored bit for bit before returning (also when `gradient` throws).
// Throws ArgumentError when eps is not finite and positive, ShapeError when acc's slots differ from
// the parameters.
template <class T, class GradientFn>
void hutchinson_probe(std::span<const std::span<T>> params, GradientFn&& gradient,
                      std::mt19937_64& rng, double eps, RunningMeans& acc) {
  if (!(eps > 0) || !std::isfinite(eps))
    VITC_THROW(ArgumentError("hutchinson_probe: eps must be finite and positive"));
  if (acc.slots() != params.size())
    VITC_THROW(ShapeError("hutchinson_probe: the accumulator has " + std::to_string(acc.slots()) +
                          " slots for " + std::to_string(params.size()) + " parameter tensors"));
  const std::size_t n = params.size();
  std::vector<std::vector<T>> saved(n), v(n), g_plus(n), g_minus(n);
  for (std::size_t i = 0; i < n; ++i) {
    if (acc.size(i) != static_cast<Index>(params[i].size()))
      VITC_THROW(ShapeError("hutchinson_probe: slot " + std::to_string(i) + " has " +
                            std::to_string(acc.size(i)) + " elements, the parameter " +
                            std::to_string(params[i].size())));
    saved[i].assign(params[i].begin(), params[i].end());
    v[i].resize(params[i].size());
    g_plus[i].resize(params[i].size());
    g_minus[i].resize(params[i].size());
  }
  std::uint64_t bits = 0;
  int left = 0;
  for (auto& vi : v)
    for (T& x : vi) {
      if (left == 0) {
        bits = rng();
        left = 64;
      }
      x = (bits & 1) ? T(1) : T(-1);
      bits >>= 1;
      --left;
    }
  const auto restore = [&] {
    for (std::size_t i = 0; i < n; ++i)
      std::copy(saved[i].begin(), saved[i].end(), params[i].begin());
  };
  const auto evaluate = [&](double sign, std::vector<std::vector<T>>& out) {
    for (std::size_t i = 0; i < n; ++i)
      for (std::size_t j = 0; j < saved[i].size(); ++j)
        params[i][j] = static_cast<T>(static_cast<double>(saved[i][j]) + sign * eps * v[i][j]);
    std::vector<std::span<T>> spans(out.begin(), out.end());
    gradient(std::span<const std::span<T>>(spans));
  };
  try {
    evaluate(+1.0, g_plus);
    evaluate(-1.0, g_minus);
  } catch (...) {
    restore();
    throw;
  }
  restore();
  const double inv = 1.0 / (2.0 * eps);
  for (std::size_t i = 0; i < n; ++i) {
    std::vector<double> hv(saved[i].size());
    for (std::size_t j = 0; j < hv.size(); ++j)
      hv[j] = (static_cast<double>(g_plus[i][j]) - static_cast<double>(g_minus[i][j])) * inv;
    Hutchinson::accumulate(acc, i, std::span<const T>(v[i]), std::span<const double>(hv));
  }
}

}  // namespace vitc::importance
