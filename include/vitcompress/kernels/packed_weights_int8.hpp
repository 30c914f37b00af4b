// SPDX-License-Identifier: Apache-2.0
#pragma once
// The int8 weight matrix B of C = A·B, packed once into the layout every int8 GEMM path reads.
//
// What packing is: a GEMM microkernel wants, at each step, the next few k of a fixed group of
// columns in one aligned vector load. Row-major B (or PyTorch's [out, in] weight, which is Bᵀ)
// gives neither. Packing rearranges B once, at model load, so the hot loop streams memory
// linearly; it costs one pass over K·N bytes and is not repeated per call.
//
// Layout. Columns are cut into panels of kPanel = 16; K is padded to a multiple of kKGroup = 4.
// Panel p holds kgroups() groups of 64 bytes; byte (g, c, j) of panel p is
//
//     data()[p·panel_bytes() + g·64 + c·4 + j] = B[4g + j][16p + c]   (0 beyond K or N),
//
// i.e. each 32-bit lane holds 4 consecutive k of one column. That is the operand layout of
// vpdpbusd (one zmm = 16 columns × 4 k), of vpmaddubsw + vpmaddwd on two ymm halves, and of the
// portable xsimd kernel, so one packed object serves every arch path. Panels start on 64-byte
// boundaries.
//
// Side data the arch paths need: column_sums()[n] = Σ_k B[k][n] (int32; zero for padded
// columns), used to correct for the activation zero point and for the +128 shift of VNNI; and
// max_magnitude() = max |B[k][n]|, which picks the AVX2 kernel: at most 64, vpmaddubsw's u8 × s8
// pairs cannot saturate; at most 127, the sign trick is exact (see detail/gemm_int8_avx2.hpp).
// panel_has_min(p) says whether panel p holds −128.
//
// Weights are symmetric (zero point 0); K may be at most kMaxDepth so that every int32
// accumulation of (a − a_zero_point)·b is exact (|a − za| <= 255, |b| <= 128).
//
// B for attention: Q·Kᵀ packs the key matrix [tokens × head_dim] through its transposed view,
// P·V packs V [tokens × head_dim] directly; both are ~12 KB at DeiT sizes and pack in
// microseconds, so packing an activation on the fly is cheap. reserved(k, n) allocates once and
// repack(b) refills in place (no allocation), with fast paths for those two views: a column of Kᵀ
// is a contiguous key row (4-byte copies), a row of V is contiguous (a 4×16 byte transpose).

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "vitcompress/core/error.hpp"
#include "vitcompress/core/tensor.hpp"

namespace vitc::kernels {

class PackedWeightsInt8 {
 public:
  static constexpr Index kPanel = 16;
  static constexpr Index kKGroup = 4;
  static constexpr Index kGroupBytes = kPanel * kKGroup;  // 64: one zmm, one cache line
  static constexpr Index kMaxDepth = 65536;               // 255 · 128 · 65536 < 2^31

  PackedWeightsInt8() = default;

  // Packs B given as a K×N view (any strides: a row-major [in, out] matrix, or the transposed
  // view of PyTorch's [out, in] weight). Throws ShapeError if K exceeds kMaxDepth.
  explicit PackedWeightsInt8(TensorView<const std::int8_t, 2> b) { pack(b); }

  // Storage for any B of depth <= k and at most n columns, to be filled by repack() (which then
  // allocates nothing): the B operand of a product of two activations, packed per call.
  [[nodiscard]] static PackedWeightsInt8 reserved(Index k, Index n) {
    PackedWeightsInt8 w;
    w.k_ = std::min(k, kMaxDepth);
    w.n_ = n;
    w.data_ = Tensor<std::int8_t, 1>({w.panels() * w.panel_bytes()});
    w.col_sums_ = Tensor<std::int32_t, 1>({w.panels() * kPanel});
    w.panel_mag_.assign(static_cast<std::size_t>(w.panels()), 0);
    w.k_ = w.n_ = 0;
    return w;
  }

  // Packs a new B (K×N view, any strides) in place. Allocates only when B needs more bytes than
  // the object holds (never after reserved(k, n) with K <= k, N <= n). Fast for a B whose rows
  // (K) or columns (N) are contiguous: the transposed view of a row-major activation matrix
  // (attention's Kᵀ) and a row-major one (V).
  void repack(TensorView<const std::int8_t, 2> b) {
    const Index k = b.extent(0), n = b.extent(1);
    if (k > kMaxDepth)
      VITC_THROW(ShapeError("PackedWeightsInt8: depth K = " + std::to_string(k) + " of B exceeds " +
                            std::to_string(kMaxDepth)));
    const Index kg = (k + kKGroup - 1) / kKGroup, np = (n + kPanel - 1) / kPanel;
    if (np * kg * kGroupBytes > data_.size() || np * kPanel > col_sums_.size() ||
        np > static_cast<Index>(panel_mag_.size())) {
      pack(b);
      return;
    }
    if (k != k_ || n != n_) {
      // New shape: the padding (beyond K or N) must read as zeros.
      std::memset(data_.data(), 0, static_cast<std::size_t>(np * kg * kGroupBytes));
      std::memset(col_sums_.data(), 0, static_cast<std::size_t>(np * kPanel) * 4);
      k_ = k;
      n_ = n;
    }
    fill(b);
  }

  // Packs W given as N×K (PyTorch nn.Linear weight [out_features, in_features]): B = Wᵀ.
  [[nodiscard]] static PackedWeightsInt8 from_out_in(TensorView<const std::int8_t, 2> w) {
    return PackedWeightsInt8(w.transposed());
  }

  [[nodiscard]] Index depth() const noexcept { return k_; }  // K
  [[nodiscard]] Index cols() const noexcept { return n_; }   // N
  [[nodiscard]] Index kgroups() const noexcept { return (k_ + kKGroup - 1) / kKGroup; }
  [[nodiscard]] Index panels() const noexcept { return (n_ + kPanel - 1) / kPanel; }
  [[nodiscard]] Index panel_bytes() const noexcept { return kgroups() * kGroupBytes; }
  [[nodiscard]] const std::int8_t* data() const noexcept { return data_.data(); }
  [[nodiscard]] const std::int8_t* panel(Index p) const noexcept {
    return data_.data() + p * panel_bytes();
  }
  // panels()·16 entries; Σ_k B[k][n] for n < N, 0 after.
  [[nodiscard]] const std::int32_t* column_sums() const noexcept { return col_sums_.data(); }
  [[nodiscard]] bool panel_has_min(Index p) const noexcept { return panel_mag_[p] == 128; }
  // max |B[k][n]| over all of B (0 for an empty B).
  [[nodiscard]] std::int32_t max_magnitude() const noexcept { return max_mag_; }
  // B[k][n] read back from the packed layout (0 <= k < K, 0 <= n < N).
  [[nodiscard]] std::int8_t at(Index k, Index n) const noexcept {
    VITC_DCHECK(k >= 0 && k < k_ && n >= 0 && n < n_);
    return data_.data()[(n / kPanel) * panel_bytes() + (k / kKGroup) * kGroupBytes +
                        (n % kPanel) * kKGroup + (k % kKGroup)];
  }
  // Bytes of packed data (weights only, not the column sums).
  [[nodiscard]] Index bytes() const noexcept { return data_.size(); }

 private:
  void pack(TensorView<const std::int8_t, 2> b) {
    k_ = b.extent(0);
    n_ = b.extent(1);
    if (k_ > kMaxDepth)
      VITC_THROW(ShapeError("PackedWeightsInt8: depth K = " + std::to_string(k_) +
                            " of B exceeds " + std::to_string(kMaxDepth)));
    data_ = Tensor<std::int8_t, 1>({panels() * panel_bytes()});
    col_sums_ = Tensor<std::int32_t, 1>({panels() * kPanel});
    panel_mag_.assign(static_cast<std::size_t>(panels()), 0);
    fill(b);
  }

  // Writes B into the storage sized for its (k_, n_), whose padding is already zero, and records
  // each panel's largest magnitude.
  void fill(TensorView<const std::int8_t, 2> b) noexcept {
    fill_panels(b);
    max_mag_ = 0;
    for (Index p = 0; p < panels(); ++p)
      max_mag_ = std::max<std::int32_t>(max_mag_, panel_mag_[static_cast<std::size_t>(p)]);
  }

  // |v| of the extremes of a panel, as a byte (128 for −128).
  static std::uint8_t magnitude(std::int8_t low, std::int8_t high) noexcept {
    return static_cast<std::uint8_t>(std::max(-static_cast<int>(low), static_cast<int>(high)));
  }

  // The column sums and the largest magnitude of one packed panel, read back from its bytes (the
  // padding is zero, so padded columns sum to 0). Byte position i of every group is summed in an
  // int16 lane (exact over 256 groups: |Σ| <= 128·256), then the four lanes of a column are
  // added: loops over whole 64-byte groups that the compiler vectorizes, where the per-column
  // loops over B they replace ran byte by byte.
  static std::uint8_t panel_stats(const std::int8_t* pd, Index kg, std::int32_t* sums) noexcept {
    constexpr Index kBlock = 256;
    std::int32_t acc[kPanel] = {};
    for (Index g0 = 0; g0 < kg; g0 += kBlock) {
      std::int16_t part[kGroupBytes] = {};
      const Index g1 = std::min(kg, g0 + kBlock);
      for (Index g = g0; g < g1; ++g)
        for (Index i = 0; i < kGroupBytes; ++i)
          part[i] = static_cast<std::int16_t>(part[i] + pd[g * kGroupBytes + i]);
      for (Index c = 0; c < kPanel; ++c)
        acc[c] += part[c * kKGroup] + part[c * kKGroup + 1] + part[c * kKGroup + 2] +
                  part[c * kKGroup + 3];
    }
    std::memcpy(sums, acc, sizeof acc);
    std::int8_t low = 0, high = 0;
    for (Index i = 0; i < kg * kGroupBytes; ++i) {
      low = std::min(low, pd[i]);
      high = std::max(high, pd[i]);
    }
    return magnitude(low, high);
  }

  void fill_panels(TensorView<const std::int8_t, 2> b) noexcept {
    const std::int8_t* src = b.data();
    const Index s0 = b.stride(0), s1 = b.stride(1);
    std::int8_t* dst = data_.data();
    const Index pb = panel_bytes(), k = k_, n_all = n_, kg = kgroups();
    for (Index p = 0; p < panels(); ++p) {
      std::int8_t* pd = dst + p * pb;
      const Index c_end = std::min(kPanel, n_all - p * kPanel);
      if (s0 == 1) {
        // Column n of B is contiguous (attention's Kᵀ: a key row): 4 consecutive k of it make
        // one 32-bit lane of a group.
        const Index kfull = k / kKGroup * kKGroup;
        const std::int8_t* first = src + p * kPanel * s1;
        if (c_end == kPanel) {
          // A group is one dword of each of 16 columns (a strided gather of 16 lanes).
          for (Index kk = 0; kk < kfull; kk += kKGroup) {
            std::uint32_t lanes[kPanel];
            for (Index c = 0; c < kPanel; ++c) std::memcpy(&lanes[c], first + c * s1 + kk, 4);
            std::memcpy(pd + kk * kPanel, lanes, sizeof lanes);
          }
        } else {
          for (Index c = 0; c < c_end; ++c)
            for (Index kk = 0; kk < kfull; kk += kKGroup)
              std::memcpy(pd + kk * kPanel + c * kKGroup, first + c * s1 + kk, kKGroup);
        }
        for (Index c = 0; c < c_end; ++c)
          for (Index kk = kfull; kk < k; ++kk)
            pd[kfull * kPanel + c * kKGroup + (kk - kfull)] = first[c * s1 + kk];
      } else if (s1 == 1) {
        // Row k of B is contiguous (attention's V): a 4×16 byte transpose per k-group, the four
        // rows' bytes interleaved (byte j of column c's dword is row kk + j). Rows of a last,
        // narrower panel are copied into zeros first (reading 16 bytes of them could run past
        // the end of B).
        const std::int8_t* first = src + p * kPanel;
        const std::int8_t zeros[kPanel] = {};
        std::int8_t narrow[kKGroup][kPanel] = {};
        for (Index kk = 0; kk < k; kk += kKGroup) {
          const std::int8_t* r[kKGroup];
          for (Index j = 0; j < kKGroup; ++j) {
            r[j] = kk + j < k ? first + (kk + j) * s0 : zeros;
            if (c_end < kPanel && kk + j < k) {
              std::memcpy(narrow[j], r[j], static_cast<std::size_t>(c_end));
              r[j] = narrow[j];
            }
          }
          std::int8_t* group = pd + (kk / kKGroup) * kGroupBytes;
          for (Index c = 0; c < kPanel; ++c) {
            group[c * kKGroup] = r[0][c];
            group[c * kKGroup + 1] = r[1][c];
            group[c * kKGroup + 2] = r[2][c];
            group[c * kKGroup + 3] = r[3][c];
          }
        }
      } else {
        for (Index c = 0; c < c_end; ++c) {
          const std::int8_t* col = src + (p * kPanel + c) * s1;
          for (Index kk = 0; kk < k; ++kk)
            pd[(kk / kKGroup) * kGroupBytes + c * kKGroup + (kk % kKGroup)] = col[kk * s0];
        }
      }
      panel_mag_[static_cast<std::size_t>(p)] = panel_stats(pd, kg, col_sums_.data() + p * kPanel);
    }
  }

  Index k_ = 0, n_ = 0;
  Tensor<std::int8_t, 1> data_;
  Tensor<std::int32_t, 1> col_sums_;
  std::vector<std::uint8_t> panel_mag_;  // max |B| per panel
  std::int32_t max_mag_ = 0;
};

}  // namespace vitc::kernels
