// SPDX-License-Identifier: Apache-2.0
#pragma once
// The float ViT's building blocks, forward and backward: linear layers as Eigen GEMMs split over
// row (or column) blocks, LayerNorm, softmax and GELU as tight row loops on Eigen arrays (which
// Eigen vectorizes, exp and erf included), patch unfold/fold. Internal to model/.
//
// Buffers are row-major with a leading dimension (`Mat`), the layout every activation of the ViT
// has. Work is split across a ThreadPool (nullptr = the calling thread only) into contiguous,
// deterministic chunks; every output element is written by exactly one chunk, so results do not
// depend on the number of threads except where a GEMM's own blocking does.

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include <Eigen/Core>
#include <unsupported/Eigen/SpecialFunctions>
#include <xsimd/xsimd.hpp>

#include "vitcompress/core/check.hpp"
#include "vitcompress/core/parallel_for.hpp"
#include "vitcompress/core/tensor.hpp"
#include "vitcompress/model/vit_weights.hpp"

namespace vitc::model::detail {

// Below this many multiply-adds a parallel region costs more than it saves.
inline constexpr Index kMinParallelWork = Index{1} << 15;

// Runs body(begin, end) over [0, n): on the pool when there is one and the work is worth it.
template <class Body>
void parallel(ThreadPool* pool, Index n, Index grain, Index work_per_item, Body&& body) {
  if (n <= 0) return;
  if (pool != nullptr && pool->num_threads() > 1 && n > grain &&
      n * std::max<Index>(work_per_item, 1) >= kMinParallelWork)
    pool->parallel_for(n, grain, body);
  else
    body(Index{0}, n);
}

template <class T>
using EigenRowMat =
    Eigen::Matrix<std::remove_const_t<T>, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using EigenMatMap =
    Eigen::Map<std::conditional_t<std::is_const_v<T>, const EigenRowMat<T>, EigenRowMat<T>>,
               Eigen::Unaligned, Eigen::OuterStride<>>;
template <class T>
using EigenRowArray = Eigen::Array<std::remove_const_t<T>, 1, Eigen::Dynamic>;
template <class T>
using EigenArrayMap =
    Eigen::Map<std::conditional_t<std::is_const_v<T>, const EigenRowArray<T>, EigenRowArray<T>>>;

// A row-major matrix window: rows x cols elements, row r starting at data + r * ld.
template <class T>
struct Mat {
  T* data = nullptr;
  Index rows = 0, cols = 0, ld = 0;

  Mat() = default;
  Mat(T* d, Index r, Index c, Index l) : data(d), rows(r), cols(c), ld(l) {}
  Mat(T* d, Index r, Index c) : data(d), rows(r), cols(c), ld(c) {}
  template <class U>
  requires(std::is_const_v<T>&& std::is_same_v<const U, T>) Mat(const Mat<U>& m)  // NOLINT
      : data(m.data), rows(m.rows), cols(m.cols), ld(m.ld) {}

  T* row(Index r) const noexcept { return data + r * ld; }
  Mat row_range(Index r0, Index r1) const noexcept { return {data + r0 * ld, r1 - r0, cols, ld}; }
  Mat col_range(Index c0, Index c1) const noexcept { return {data + c0, rows, c1 - c0, ld}; }
  EigenMatMap<T> eigen() const noexcept {
    return EigenMatMap<T>(data, rows, cols, Eigen::OuterStride<>(rows > 1 ? ld : cols));
  }
  TensorView<T, 2> view() const { return TensorView<T, 2>(data, {rows, cols}, {ld, 1}); }
};

template <class T>
Mat<const T> mat_of(const Tensor<T, 2>& t) {
  return {t.data(), t.extent(0), t.extent(1)};
}

// Whether to split a GEMM with `rows` rows and `cols` output columns over output columns rather
// than rows: each thread packs only its share of the weights then (the larger operand when the
// batch of tokens is small, e.g. one image), at the price of packing all rows of the activations.
inline bool split_columns(ThreadPool* pool, Index rows, Index cols) noexcept {
  return pool != nullptr && pool->num_threads() > 1 && rows < cols;
}

// y[r, :] = (residual[r, :] if given) + b + x[r, :] W^T, then epilogue(r0, r1, c0, c1) on each
// finished block of y. `residual` may alias y (in-place residual add).
template <class T, class Epilogue>
void linear_forward(ThreadPool* pool, Mat<const T> x, const LinearWeights<T>& lw, Mat<T> y,
                    const Mat<const T>* residual, Epilogue&& epilogue) {
  const Index n = lw.weight.extent(0), k = lw.weight.extent(1), m = x.rows;
  VITC_DCHECK(x.cols == k && y.cols == n && x.rows == y.rows);
  const Mat<const T> w = mat_of(lw.weight);
  const T* bias = lw.bias.data();
  const auto block = [&](Index r0, Index r1, Index c0, Index c1) {
    const EigenArrayMap<const T> b(bias + c0, c1 - c0);
    for (Index r = r0; r < r1; ++r) {
      EigenArrayMap<T> yr(y.row(r) + c0, c1 - c0);
      if (residual != nullptr)
        yr = EigenArrayMap<const T>(residual->row(r) + c0, c1 - c0) + b;
      else
        yr = b;
    }
    y.row_range(r0, r1).col_range(c0, c1).eigen().noalias() +=
        x.row_range(r0, r1).eigen() * w.row_range(c0, c1).eigen().transpose();
    epilogue(r0, r1, c0, c1);
  };
  if (split_columns(pool, m, n))
    parallel(pool, n, 16, m * k, [&](Index c0, Index c1) { block(0, m, c0, c1); });
  else
    parallel(pool, m, 8, n * k, [&](Index r0, Index r1) { block(r0, r1, 0, n); });
}

template <class T>
void linear_forward(ThreadPool* pool, Mat<const T> x, const LinearWeights<T>& lw, Mat<T> y,
                    const Mat<const T>* residual = nullptr) {
  linear_forward(pool, x, lw, y, residual, [](Index, Index, Index, Index) {});
}

// Gradients of y = x W^T + b given dy: grad.weight += dy^T x, grad.bias += column sums of dy, and
// (when dx.data != nullptr) dx = dy W.
template <class T>
void linear_backward(ThreadPool* pool, Mat<const T> x, Mat<const T> dy, const LinearWeights<T>& lw,
                     LinearWeights<T>& grad, Mat<T> dx) {
  const Index n = lw.weight.extent(0), k = lw.weight.extent(1), m = x.rows;
  VITC_DCHECK(dy.cols == n && x.cols == k && dy.rows == m);
  Mat<T> gw(grad.weight.data(), n, k);
  T* gb = grad.bias.data();
  parallel(pool, n, 8, m * k, [&](Index n0, Index n1) {
    const Mat<const T> dyc = dy.col_range(n0, n1);
    gw.row_range(n0, n1).eigen().noalias() += dyc.eigen().transpose() * x.eigen();
    EigenArrayMap<T> b(gb + n0, n1 - n0);
    for (Index r = 0; r < m; ++r) b += EigenArrayMap<const T>(dyc.row(r), n1 - n0);
  });
  if (dx.data != nullptr) {
    VITC_DCHECK(dx.cols == k && dx.rows == m);
    const Mat<const T> w = mat_of(lw.weight);
    if (split_columns(pool, m, k))
      parallel(pool, k, 16, m * n, [&](Index c0, Index c1) {
        dx.col_range(c0, c1).eigen().noalias() = dy.eigen() * w.col_range(c0, c1).eigen();
      });
    else
      parallel(pool, m, 8, n * k, [&](Index r0, Index r1) {
        dx.row_range(r0, r1).eigen().noalias() = dy.row_range(r0, r1).eigen() * w.eigen();
      });
  }
}

// y = (x - mean) / sqrt(var + eps) * gamma + beta over each row (biased variance, as PyTorch);
// stores mean and 1/sqrt(var + eps) per row when the pointers are given.
template <class T>
void layer_norm_forward(ThreadPool* pool, Mat<const T> x, const LayerNormWeights<T>& ln, T eps,
                        Mat<T> y, T* mean_out, T* rstd_out) {
  const Index d = x.cols;
  const EigenArrayMap<const T> g(ln.weight.data(), d), b(ln.bias.data(), d);
  const T inv_d = T(1) / static_cast<T>(d);
  parallel(pool, x.rows, 8, 8 * d, [&](Index r0, Index r1) {
    for (Index r = r0; r < r1; ++r) {
      const EigenArrayMap<const T> xr(x.row(r), d);
      const T mean = xr.sum() * inv_d;
      const T var = (xr - mean).square().sum() * inv_d;
      const T rstd = T(1) / std::sqrt(var + eps);
      EigenArrayMap<T>(y.row(r), d) = (xr - mean) * (rstd * g) + b;
      if (mean_out != nullptr) {
        mean_out[r] = mean;
        rstd_out[r] = rstd;
      }
    }
  });
}

// LayerNorm backward. With xhat = (x - mean) * rstd and g = dy * gamma:
//   dx += rstd * (g - mean(g) - xhat * mean(g * xhat))   (accumulated: dx is the residual gradient)
//   grad.weight += sum_rows dy * xhat,  grad.bias += sum_rows dy
// `xhat` is scratch of x's shape (contiguous).
template <class T>
void layer_norm_backward(ThreadPool* pool, Mat<const T> x, const T* mean, const T* rstd,
                         Mat<const T> dy, const LayerNormWeights<T>& ln, LayerNormWeights<T>& grad,
                         Mat<T> dx, T* xhat_scratch) {
  const Index d = x.cols, m = x.rows;
  const EigenArrayMap<const T> g(ln.weight.data(), d);
  const T inv_d = T(1) / static_cast<T>(d);
  Mat<T> xhat(xhat_scratch, m, d);
  parallel(pool, m, 8, 12 * d, [&](Index r0, Index r1) {
    for (Index r = r0; r < r1; ++r) {
      EigenArrayMap<T> xh(xhat.row(r), d);
      xh = (EigenArrayMap<const T>(x.row(r), d) - mean[r]) * rstd[r];
      const EigenArrayMap<const T> dyr(dy.row(r), d);
      const T a = (dyr * g).sum() * inv_d;
      const T c = (dyr * g * xh).sum() * inv_d;
      EigenArrayMap<T>(dx.row(r), d) += rstd[r] * (dyr * g - a - xh * c);
    }
  });
  T* gg = grad.weight.data();
  T* gb = grad.bias.data();
  parallel(pool, d, 16, 2 * m, [&](Index c0, Index c1) {
    EigenArrayMap<T> wg(gg + c0, c1 - c0), bg(gb + c0, c1 - c0);
    for (Index r = 0; r < m; ++r) {
      const EigenArrayMap<const T> dyr(dy.row(r) + c0, c1 - c0);
      wg += dyr * EigenArrayMap<const T>(xhat.row(r) + c0, c1 - c0);
      bg += dyr;
    }
  });
}

// Softmax of each row of a contiguous-row block, in place.
template <class T>
inline void softmax_rows(Mat<T> s) noexcept {
  for (Index r = 0; r < s.rows; ++r) {
    EigenArrayMap<T> row(s.row(r), s.cols);
    const T max = row.maxCoeff();
    row = (row - max).exp();
    row *= T(1) / row.sum();
  }
}

// row ← softmax((row − max)·scale), in place, for the float inference path (model::PackedViT);
// the reference forward keeps softmax_rows above. xsimd batches, and std::exp on the last n mod W
// elements: Eigen's array exp peels an unaligned row into scalar std::exp calls until it reaches
// alignment, which for 17-token rows was most of them (8% of the shipped model's fp32 forward in
// a perf profile).
inline void softmax_row_inplace(float* row, Index n, float scale) noexcept {
  using B = xsimd::batch<float>;
  constexpr Index kW = static_cast<Index>(B::size);
  const Index full = n - n % kW;
  float max = -std::numeric_limits<float>::infinity();
  if (full > 0) {
    B vmax = B::load_unaligned(row);
    for (Index i = kW; i < full; i += kW) vmax = xsimd::max(vmax, B::load_unaligned(row + i));
    alignas(64) float lanes[kW];
    vmax.store_aligned(lanes);
    max = *std::max_element(lanes, lanes + kW);
  }
  for (Index i = full; i < n; ++i) max = std::max(max, row[i]);
  const B vm(max), vs(scale);
  B vsum(0.0F);
  for (Index i = 0; i < full; i += kW) {
    const B e = xsimd::exp((B::load_unaligned(row + i) - vm) * vs);
    e.store_unaligned(row + i);
    vsum += e;
  }
  float sum = full > 0 ? xsimd::hadd(vsum) : 0.0F;
  for (Index i = full; i < n; ++i) {
    row[i] = std::exp((row[i] - max) * scale);
    sum += row[i];
  }
  const float inv = 1.0F / sum;
  const B vinv(inv);
  for (Index i = 0; i < full; i += kW) (B::load_unaligned(row + i) * vinv).store_unaligned(row + i);
  for (Index i = full; i < n; ++i) row[i] *= inv;
}

// In place: dp <- p * (dp - sum(dp * p)) per row (softmax backward).
template <class T>
inline void softmax_backward_rows(Mat<const T> p, Mat<T> dp) noexcept {
  for (Index r = 0; r < p.rows; ++r) {
    const EigenArrayMap<const T> pr(p.row(r), p.cols);
    EigenArrayMap<T> dr(dp.row(r), p.cols);
    const T dot = (pr * dr).sum();
    dr = pr * (dr - dot);
  }
}

// Exact GELU: y = x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)). `y` may alias `x`.
template <class T>
inline void gelu_forward(const T* x, T* y, Index n) noexcept {
  const EigenArrayMap<const T> xa(x, n);
  EigenArrayMap<T>(y, n) = T(0.5) * xa * (T(1) + (xa * T(0.70710678118654752440)).erf());
}

// In place: dy <- dy * (Phi(x) + x phi(x)), phi the standard normal density.
template <class T>
inline void gelu_backward(const T* x, T* dy, Index n) noexcept {
  const EigenArrayMap<const T> xa(x, n);
  const T inv_sqrt_2pi = T(0.39894228040143267794);
  EigenArrayMap<T>(dy, n) *= T(0.5) * (T(1) + (xa * T(0.70710678118654752440)).erf()) +
                             xa * inv_sqrt_2pi * (T(-0.5) * xa.square()).exp();
}

// Patches as GEMM rows: patches[b * G*G + py * G + px, (c * P + ky) * P + kx] =
// image[b, c, py * P + ky, px * P + kx] (the order of a Conv2d kernel [D, C, P, P] flattened).
template <class T>
void unfold_patches(ThreadPool* pool, const TensorView<const T, 4>& images, Index patch,
                    Mat<T> patches) {
  const Index c_in = images.extent(1), grid = images.extent(2) / patch;
  const Index per_image = grid * grid;
  const bool unit = images.stride(3) == 1;
  parallel(pool, patches.rows, 4, patches.cols, [&](Index r0, Index r1) {
    for (Index r = r0; r < r1; ++r) {
      const Index b = r / per_image, py = (r % per_image) / grid, px = r % grid;
      T* out = patches.row(r);
      for (Index c = 0; c < c_in; ++c)
        for (Index ky = 0; ky < patch; ++ky) {
          const T* src = images.data() + b * images.stride(0) + c * images.stride(1) +
                         (py * patch + ky) * images.stride(2) + px * patch * images.stride(3);
          if (unit)
            std::memcpy(out, src, static_cast<std::size_t>(patch) * sizeof(T));
          else
            for (Index kx = 0; kx < patch; ++kx) out[kx] = src[kx * images.stride(3)];
          out += patch;
        }
    }
  });
}

// The adjoint of unfold_patches (patches do not overlap and tile the image, so it is a scatter).
template <class T>
void fold_patches(ThreadPool* pool, Mat<const T> patches, Index patch,
                  const TensorView<T, 4>& images) {
  const Index c_in = images.extent(1), grid = images.extent(2) / patch;
  const Index per_image = grid * grid;
  parallel(pool, patches.rows, 4, patches.cols, [&](Index r0, Index r1) {
    for (Index r = r0; r < r1; ++r) {
      const Index b = r / per_image, py = (r % per_image) / grid, px = r % grid;
      const T* in = patches.row(r);
      for (Index c = 0; c < c_in; ++c)
        for (Index ky = 0; ky < patch; ++ky) {
          T* dst = images.data() + b * images.stride(0) + c * images.stride(1) +
                   (py * patch + ky) * images.stride(2) + px * patch * images.stride(3);
          for (Index kx = 0; kx < patch; ++kx) dst[kx * images.stride(3)] = in[kx];
          in += patch;
        }
    }
  });
}

}  // namespace vitc::model::detail
