// SPDX-License-Identifier: Apache-2.0
#pragma once
// Signed 4-bit weights packed two per byte, with per-output-channel or per-group scales, in the
// layout the 4-bit GEMM (kernels/gemm_int4_packed.hpp) reads.
//
// Two layouts, one definition each: kernels/int4_packing.hpp (Int4Weights) is the storage and
// interchange layout the quantizer writes (rows of [out, in], two's-complement nibbles, low
// nibble first). This class is the kernel's layout, repacked once from it at load time by
// from_int4_weights() (or from plain int8 codes), as PackedWeightsInt8 is from an int8 matrix.
//
// Why 4 bits: a GEMM with one activation row (M = 1) reads every weight byte once and does one
// multiply-add per weight, so it runs at memory speed; halving the weight bytes nearly halves its
// time. With many rows the GEMM is compute-bound and the unpacking must be nearly free: here it
// is one AND, or one shift and one AND, per 64 bytes, shared by every row of the tile.
//
// Values. w in [−8, 7] is stored as the nibble w + 8 in [0, 15] (offset binary). The kernels
// multiply the nibble, an unsigned byte, by the signed activation and subtract 8·Σa per group,
// which the activation packing computes once per row; so no sign extension is needed and
// vpmaddubsw cannot saturate (2·15·128 < 32767).
//
// Layout. Columns are cut into panels of 16, K into blocks of 8 (zero-padded: a padded weight is
// the nibble 8, w = 0). Block b of panel p is 64 bytes; byte c·4 + j (column c, j in 0..3) holds
//
//     low nibble  = w[8b + j][16p + c] + 8,      high nibble = w[8b + 4 + j][16p + c] + 8,
//
// so `byte & 0x0F` is exactly the int8 GEMM's k-group 2b (kernels/packed_weights_int8.hpp) and
// `(byte >> 4) & 0x0F` is k-group 2b + 1. Panels start on 64-byte boundaries and hold
// kblocks()·64 bytes: half of the int8 layout.
//
// Scales. group_size() = 0: one float scale per output column (scale(0, n)); the GEMM's int32
// accumulators are exact and the caller folds the scales into its output pipeline.
// group_size() = G (a multiple of 8: 32, 64, 128 in practice): scale(g, n) for the groups
// g = 0 .. groups() − 1 of G consecutive k (the last one may be shorter); the GEMM accumulates
// each group in int32 and sums scale·partial in float. group_column_sums(g)[n] = Σ_{k in g} w.
// Integer groups (with_group_multipliers): group_size() = G and an integer multiplier m(g, n) per
// group instead of a float scale; the GEMM then sums m·partial exactly in int32 and applies an
// ordinary output pipeline, into which the caller folds one step per column (the form of
// quant/group_scales.hpp, where the group scale is step·m).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "vitcompress/core/error.hpp"
#include "vitcompress/core/tensor.hpp"
#include "vitcompress/kernels/int4_packing.hpp"

namespace vitc::kernels {

class PackedWeightsInt4 {
 public:
  static constexpr Index kPanel = 16;
  static constexpr Index kKBlock = 8;
  static constexpr Index kBlockBytes = 64;
  static constexpr Index kMaxDepth = 65536;

  PackedWeightsInt4() = default;

  // Packs w given as a K×N view of int8 values in [−8, 7] (any strides). `scales` holds N floats
  // (group_size = 0) or groups()·N floats, group-major. Throws ArgumentError for a value out of
  // range, a non-finite scale, a wrong scale count or a group size that is not 0 or a positive
  // multiple of 8; ShapeError if K exceeds kMaxDepth.
  PackedWeightsInt4(TensorView<const std::int8_t, 2> w, std::span<const float> scales,
                    Index group_size = 0) {
    pack(w, scales, group_size);
  }

  // The same from an [out, in] (N×K) matrix, PyTorch's nn.Linear layout.
  [[nodiscard]] static PackedWeightsInt4 from_out_in(TensorView<const std::int8_t, 2> w,
                                                     std::span<const float> scales,
                                                     Index group_size = 0) {
    return PackedWeightsInt4(w.transposed(), scales, group_size);
  }

  // Repacks the quantizer's Int4Weights (kernels/int4_packing.hpp): W [N, K] with scales
  // [N, groups]. Throws ArgumentError when its group size is not 0 or a multiple of 8, plus the
  // errors of Int4Weights::validate.
  [[nodiscard]] static PackedWeightsInt4 from_int4_weights(const Int4Weights& w,
                                                           const std::string& what = "weights") {
    w.validate(what);
    if (w.group_size % kKBlock != 0)
      VITC_THROW(ArgumentError(what + ": group size " + std::to_string(w.group_size) +
                               " is not a multiple of 8, which the 4-bit GEMM needs"));
    const Tensor<std::int8_t, 2> codes = unpack_int4(w.data.cview(), w.depth, what);
    const Index groups = w.group_size == 0 ? 1 : w.groups_per_row();
    std::vector<float> scales(static_cast<std::size_t>(groups * w.rows), 0.0f);
    for (Index n = 0; n < w.rows; ++n)
      for (Index g = 0; g < std::min(groups, w.scales.extent(1)); ++g)
        scales[static_cast<std::size_t>(g * w.rows + n)] = w.scales(n, g);
    return from_out_in(codes.cview(), scales, w.group_size);
  }

  // Per-group weights with integer group multipliers: w as a K×N view of values in [−8, 7],
  // `multipliers` groups()·N values in [1, 255], group-major. Throws ArgumentError for a group size
  // that is not a positive multiple of 8, a multiplier out of range or a wrong count, or when
  // K·2040·max m could overflow the int32 sum Σ_g m·partial (2040 = 255·8 bounds |a·w|).
  [[nodiscard]] static PackedWeightsInt4 with_group_multipliers(
      TensorView<const std::int8_t, 2> w, std::span<const std::int32_t> multipliers,
      Index group_size) {
    if (group_size <= 0)
      VITC_THROW(
          ArgumentError("PackedWeightsInt4: integer group multipliers need a group size "
                        "> 0, got " +
                        std::to_string(group_size)));
    PackedWeightsInt4 p;
    const Index k = w.extent(0), n = w.extent(1);
    const Index groups = std::max<Index>(1, (k + group_size - 1) / group_size);
    p.pack(w, std::vector<float>(static_cast<std::size_t>(groups * n), 1.0f), group_size);
    if (static_cast<Index>(multipliers.size()) != groups * n)
      VITC_THROW(ArgumentError("PackedWeightsInt4: " + std::to_string(multipliers.size()) +
                               " group multipliers given, expected " + std::to_string(groups * n)));
    std::int64_t widest = 1;
    for (std::int32_t m : multipliers) {
      if (m < 1 || m > 255)
        VITC_THROW(ArgumentError("PackedWeightsInt4: group multiplier " + std::to_string(m) +
                                 " is outside [1, 255]"));
      widest = std::max<std::int64_t>(widest, m);
    }
    if (std::int64_t{k} * 2040 * widest > std::numeric_limits<std::int32_t>::max())
      VITC_THROW(ArgumentError("PackedWeightsInt4: depth " + std::to_string(k) +
                               " with group multipliers up to " + std::to_string(widest) +
                               " could overflow the int32 sum"));
    const Index np = p.panels() * kPanel;
    p.int_groups_ = true;
    p.mults_.assign(static_cast<std::size_t>(groups * np), 0);
    p.mult_pairs_.assign(static_cast<std::size_t>(groups * np), 0);
    p.weighted_sums_.assign(static_cast<std::size_t>(np), 0);
    for (Index g = 0; g < groups; ++g)
      for (Index c = 0; c < n; ++c) {
        const std::int32_t m = multipliers[static_cast<std::size_t>(g * n + c)];
        p.mults_[static_cast<std::size_t>(g * np + c)] = m;
        p.mult_pairs_[static_cast<std::size_t>(g * np + c)] = m * 0x10001;
        // |Σ_g m·colsum_g| <= 8·K·max m: within int32 by the bound checked above.
        p.weighted_sums_[static_cast<std::size_t>(c)] +=
            m * p.col_sums_[static_cast<std::size_t>(g * np + c)];
      }
    return p;
  }

  [[nodiscard]] Index depth() const noexcept { return k_; }
  [[nodiscard]] Index cols() const noexcept { return n_; }
  [[nodiscard]] Index group_size() const noexcept { return group_; }
  [[nodiscard]] Index groups() const noexcept {
    return group_ == 0 ? 1 : std::max<Index>(1, (k_ + group_ - 1) / group_);
  }
  [[nodiscard]] Index kblocks() const noexcept { return (k_ + kKBlock - 1) / kKBlock; }
  [[nodiscard]] Index panels() const noexcept { return (n_ + kPanel - 1) / kPanel; }
  [[nodiscard]] Index panel_bytes() const noexcept { return kblocks() * kBlockBytes; }
  [[nodiscard]] const std::uint8_t* data() const noexcept { return data_.data(); }
  [[nodiscard]] const std::uint8_t* panel(Index p) const noexcept {
    return data_.data() + p * panel_bytes();
  }
  [[nodiscard]] Index bytes() const noexcept { return data_.size(); }
  // Scale of group g (0 when per channel) and column n.
  [[nodiscard]] float scale(Index g, Index n) const noexcept {
    return scales_[static_cast<std::size_t>(g * n_ + n)];
  }
  // panels()·16 floats of group g: scale(g, n), 0 beyond N (for vector loads).
  [[nodiscard]] const float* padded_scales(Index g) const noexcept {
    return padded_scales_.data() + g * panels() * kPanel;
  }
  // Whether the groups carry integer multipliers (with_group_multipliers) instead of scales.
  [[nodiscard]] bool integer_groups() const noexcept { return int_groups_; }
  // panels()·16 int32 of group g: m(g, n), 0 beyond N (integer groups only).
  [[nodiscard]] const std::int32_t* padded_multipliers(Index g) const noexcept {
    return mults_.data() + g * panels() * kPanel;
  }
  // The same with m in both int16 halves of each int32 (vpmaddwd's per-column multiplier).
  [[nodiscard]] const std::int32_t* padded_multiplier_pairs(Index g) const noexcept {
    return mult_pairs_.data() + g * panels() * kPanel;
  }
  // panels()·16 int32: Σ_g m(g, n)·Σ_{k in g} w[k][n], 0 beyond N (integer groups only).
  [[nodiscard]] const std::int32_t* weighted_column_sums() const noexcept {
    return weighted_sums_.data();
  }
  [[nodiscard]] std::int32_t multiplier(Index g, Index n) const noexcept {
    return padded_multipliers(g)[n];
  }
  // panels()·16 int32 of group g: Σ_{k in g} w[k][n], 0 beyond N.
  [[nodiscard]] const std::int32_t* group_column_sums(Index g) const noexcept {
    return col_sums_.data() + g * panels() * kPanel;
  }
  // w[k][n] read back from the packed bytes.
  [[nodiscard]] std::int8_t at(Index k, Index n) const noexcept {
    VITC_DCHECK(k >= 0 && k < k_ && n >= 0 && n < n_);
    const std::uint8_t byte =
        panel(n / kPanel)[(k / kKBlock) * kBlockBytes + (n % kPanel) * 4 + (k % 4)];
    const int nibble = (k % kKBlock) < 4 ? (byte & 0x0F) : (byte >> 4);
    return static_cast<std::int8_t>(nibble - 8);
  }
  // The group of depth index k.
  [[nodiscard]] Index group_of(Index k) const noexcept { return group_ == 0 ? 0 : k / group_; }

 private:
  void pack(TensorView<const std::int8_t, 2> w, std::span<const float> scales, Index group_size) {
    k_ = w.extent(0);
    n_ = w.extent(1);
    if (k_ > kMaxDepth)
      VITC_THROW(ShapeError("PackedWeightsInt4: depth K = " + std::to_string(k_) + " exceeds " +
                            std::to_string(kMaxDepth)));
    if (group_size < 0 || group_size % kKBlock != 0)
      VITC_THROW(ArgumentError("PackedWeightsInt4: group_size = " + std::to_string(group_size) +
                               " must be 0 (per channel) or a positive multiple of 8"));
    group_ = group_size;
    const Index want = groups() * n_;
    if (static_cast<Index>(scales.size()) != want)
      VITC_THROW(ArgumentError("PackedWeightsInt4: " + std::to_string(scales.size()) +
                               " scales given, expected " + std::to_string(want)));
    for (float s : scales)
      if (!std::isfinite(s)) VITC_THROW(ArgumentError("PackedWeightsInt4: scales must be finite"));
    scales_.assign(scales.begin(), scales.end());
    const Index np = panels() * kPanel;
    padded_scales_.assign(static_cast<std::size_t>(groups() * np), 0.0f);
    col_sums_.assign(static_cast<std::size_t>(groups() * np), 0);
    for (Index g = 0; g < groups(); ++g)
      for (Index n = 0; n < n_; ++n)
        padded_scales_[static_cast<std::size_t>(g * np + n)] = scale(g, n);
    data_ = Tensor<std::uint8_t, 1>({panels() * panel_bytes()});
    std::fill(data_.data(), data_.data() + data_.size(), std::uint8_t{0x88});  // w = 0 padding
    const std::int8_t* src = w.data();
    const Index s0 = w.stride(0), s1 = w.stride(1);
    for (Index n = 0; n < n_; ++n) {
      std::uint8_t* pd = data_.data() + (n / kPanel) * panel_bytes() + (n % kPanel) * 4;
      for (Index k = 0; k < k_; ++k) {
        const int v = src[k * s0 + n * s1];
        if (v < -8 || v > 7)
          VITC_THROW(ArgumentError("PackedWeightsInt4: w[" + std::to_string(k) + "][" +
                                   std::to_string(n) + "] = " + std::to_string(v) +
                                   " is outside [-8, 7]"));
        std::uint8_t& byte = pd[(k / kKBlock) * kBlockBytes + (k % 4)];
        const auto nibble = static_cast<std::uint8_t>(v + 8);
        byte = (k % kKBlock) < 4 ? static_cast<std::uint8_t>((byte & 0xF0) | nibble)
                                 : static_cast<std::uint8_t>((byte & 0x0F) | (nibble << 4));
        col_sums_[static_cast<std::size_t>(group_of(k) * np + n)] += v;
      }
    }
  }

  Index k_ = 0, n_ = 0, group_ = 0;
  bool int_groups_ = false;
  Tensor<std::uint8_t, 1> data_;
  std::vector<float> scales_, padded_scales_;
  std::vector<std::int32_t> col_sums_, mults_, mult_pairs_, weighted_sums_;
};

}  // namespace vitc::kernels
