// SPDX-License-Identifier: Apache-2.0
#pragma once
// The float matrix B of C = A·B packed into column panels, the layout every fp32 GEMM path reads.
//
// Layout. Columns are cut into panels of kPanel = 16 floats (one zmm, two ymm, four 128-bit
// vectors); panel p holds K rows of 16 floats,
//
//     data[p·K·16 + k·16 + c] = B[k][16p + c]        (0 for 16p + c >= N),
//
// so a microkernel streams one 64-byte line per k and panel. Panels start on 64-byte boundaries
// when `data` does. Packing is O(K·N) and done once per weight matrix (PackedWeightsF32, at model
// load) or, for activations used as B (attention's Kᵀ and V), per call into caller-provided
// storage with pack_b_f32() (PackedPanelsF32 is then a non-owning view of it).

#include <algorithm>
#include <cstring>
#include <string>

#include "vitcompress/core/check.hpp"
#include "vitcompress/core/tensor.hpp"

namespace vitc::kernels {

// A non-owning view of packed panels: what the GEMM reads.
struct PackedPanelsF32 {
  static constexpr Index kPanel = 16;
  const float* data = nullptr;
  Index k = 0, n = 0;

  [[nodiscard]] Index depth() const noexcept { return k; }
  [[nodiscard]] Index cols() const noexcept { return n; }
  [[nodiscard]] Index panels() const noexcept { return (n + kPanel - 1) / kPanel; }
  [[nodiscard]] Index panel_floats() const noexcept { return k * kPanel; }
  [[nodiscard]] const float* panel(Index p) const noexcept { return data + p * panel_floats(); }
  // B[k][n] read back from the packed layout.
  [[nodiscard]] float at(Index kk, Index nn) const noexcept {
    VITC_DCHECK(kk >= 0 && kk < k && nn >= 0 && nn < n);
    return data[(nn / kPanel) * panel_floats() + kk * kPanel + nn % kPanel];
  }
};

// Floats pack_b_f32() writes for a K×N matrix.
[[nodiscard]] inline Index packed_f32_floats(Index k, Index n) noexcept {
  return ((n + PackedPanelsF32::kPanel - 1) / PackedPanelsF32::kPanel) * k *
         PackedPanelsF32::kPanel;
}

// Packs B (K×N, any strides) into `dst` (packed_f32_floats(K, N) floats) and returns the view.
inline PackedPanelsF32 pack_b_f32(TensorView<const float, 2> b, float* dst) noexcept {
  constexpr Index kP = PackedPanelsF32::kPanel;
  const Index k = b.extent(0), n = b.extent(1), s0 = b.stride(0), s1 = b.stride(1);
  const float* src = b.data();
  const Index panels = (n + kP - 1) / kP;
  for (Index p = 0; p < panels; ++p) {
    float* pd = dst + p * k * kP;
    const Index c_end = std::min(kP, n - p * kP);
    if (s1 == 1) {
      for (Index kk = 0; kk < k; ++kk) {
        const float* row = src + kk * s0 + p * kP;
        float* out = pd + kk * kP;
        for (Index c = 0; c < c_end; ++c) out[c] = row[c];
        for (Index c = c_end; c < kP; ++c) out[c] = 0.0F;
      }
    } else {
      // Column-contiguous source (e.g. the transposed view of an [out, in] weight): read each
      // column once, write it with stride kPanel.
      for (Index c = 0; c < kP; ++c) {
        if (c < c_end) {
          const float* col = src + (p * kP + c) * s1;
          for (Index kk = 0; kk < k; ++kk) pd[kk * kP + c] = col[kk * s0];
        } else {
          for (Index kk = 0; kk < k; ++kk) pd[kk * kP + c] = 0.0F;
        }
      }
    }
  }
  return {dst, k, n};
}

// Owning packed weights: B packed once.
class PackedWeightsF32 {
 public:
  static constexpr Index kPanel = PackedPanelsF32::kPanel;

  PackedWeightsF32() = default;
  // Packs B given as a K×N view (any strides).
  explicit PackedWeightsF32(TensorView<const float, 2> b)
      : data_({std::max<Index>(packed_f32_floats(b.extent(0), b.extent(1)), 1)}) {
    view_ = pack_b_f32(b, data_.data());
  }
  // Packs W given as N×K (PyTorch nn.Linear weight [out_features, in_features]): B = Wᵀ.
  [[nodiscard]] static PackedWeightsF32 from_out_in(TensorView<const float, 2> w) {
    return PackedWeightsF32(w.transposed());
  }
  PackedWeightsF32(const PackedWeightsF32& o)
      : data_(o.data_), view_{data_.data(), o.view_.k, o.view_.n} {}
  PackedWeightsF32& operator=(const PackedWeightsF32& o) {
    if (this != &o) *this = PackedWeightsF32(o);
    return *this;
  }
  PackedWeightsF32(PackedWeightsF32&& o) noexcept
      : data_(std::move(o.data_)), view_{data_.data(), o.view_.k, o.view_.n} {}
  PackedWeightsF32& operator=(PackedWeightsF32&& o) noexcept {
    data_ = std::move(o.data_);
    view_ = {data_.data(), o.view_.k, o.view_.n};
    return *this;
  }
  ~PackedWeightsF32() = default;

  [[nodiscard]] const PackedPanelsF32& view() const noexcept { return view_; }
  [[nodiscard]] Index depth() const noexcept { return view_.k; }
  [[nodiscard]] Index cols() const noexcept { return view_.n; }
  [[nodiscard]] Index panels() const noexcept { return view_.panels(); }
  [[nodiscard]] float at(Index k, Index n) const noexcept { return view_.at(k, n); }
  // Bytes of packed data.
  [[nodiscard]] Index bytes() const noexcept {
    return packed_f32_floats(view_.k, view_.n) * static_cast<Index>(sizeof(float));
  }

 private:
  Tensor<float, 1> data_;
  PackedPanelsF32 view_;
};

}  // namespace vitc::kernels
