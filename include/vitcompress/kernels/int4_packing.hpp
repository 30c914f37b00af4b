// SPDX-License-Identifier: Apache-2.0
#pragma once
// The packed signed 4-bit weight layout: THE one definition shared by the quantizer (which writes
// it into checkpoints) and the 4-bit GEMM (which reads it).
//
// Why: a 4-bit weight matrix is half the bytes of int8, which matters when a GEMM is memory-bound
// (batch-1 inference, ANCHORS.md §4.4). Two values share a byte, so the order of nibbles, the sign
// convention and the padding must be fixed once.
//
// Layout of a weight W [N, K] (PyTorch nn.Linear order: one row per output channel, K inputs):
//
//   row_bytes = ceil(K / 2);   data is [N, row_bytes] bytes, row n at data + n·row_bytes
//   byte j of row n = (W[n, 2j] & 0xF) | ((W[n, 2j + 1] & 0xF) << 4)
//
// i.e. two's-complement nibbles, value range [−8, 7], two per byte, LOW NIBBLE FIRST along K:
// element 2j in bits 0..3, element 2j + 1 in bits 4..7 (the element order of ONNX Runtime's
// MatMulNBits, "first value in the low nibble"). When K is odd the last byte's high nibble is
// padding and is 0. Unpacking sign-extends: v = nibble − 16·(nibble >> 3).
//
// Relation to other formats (ANCHORS.md §4.1, §5.3): MatMulNBits stores unsigned nibbles with a
// default zero point of 8, so its byte is ours XOR 0x88 (adding 8 to a 4-bit two's-complement value
// flips its top bit). ggml's Q4_0 also uses offset-8 nibbles but pairs element j with element j+16
// of a 32-block in one byte; we keep consecutive pairs, so a group is contiguous bytes.
//
// Scales (Int4Weights): one float per group of G consecutive elements along K of each row,
// scales [N, ceil(K / G)], value = scale[n, k / G]·W[n, k]. G = K (one group, group_size = 0 in
// Int4Weights) is per-channel; G in {32, 64, 128} is block-wise, as ggml (32) and MatMulNBits.
// G must be even so that every group starts on a byte boundary (byte (g·G)/2 of its row); the
// last group of a row may be shorter when G does not divide K.
//
// Functions: pack_int4_row / unpack_int4_row are the noexcept scalar reference kernels (values
// assumed in [−8, 7]: a debug check); pack_int4 / unpack_int4 are the validated entry points on
// tensors (ArgumentError for a value outside [−8, 7] naming the tensor and position, ShapeError for
// inconsistent shapes). No Eigen, no model code.

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "vitcompress/core/check.hpp"
#include "vitcompress/core/error.hpp"
#include "vitcompress/core/tensor.hpp"

namespace vitc::kernels {

inline constexpr int kInt4Min = -8;
inline constexpr int kInt4Max = 7;

// Bytes of one packed row of K values.
[[nodiscard]] constexpr Index int4_row_bytes(Index k) noexcept { return (k + 1) / 2; }

// The nibble of a value in [−8, 7] (two's complement, 4 bits).
[[nodiscard]] constexpr std::uint8_t int4_nibble(std::int8_t v) noexcept {
  return static_cast<std::uint8_t>(static_cast<std::uint8_t>(v) & 0x0Fu);
}

// The value of a nibble (sign-extended).
[[nodiscard]] constexpr std::int8_t int4_value(std::uint8_t nibble) noexcept {
  const int n = nibble & 0x0F;
  return static_cast<std::int8_t>(n - ((n & 0x8) << 1));
}

// Packs k values (each in [−8, 7]) into int4_row_bytes(k) bytes.
inline void pack_int4_row(const std::int8_t* values, Index k, std::uint8_t* packed) noexcept {
  const Index pairs = k / 2;
  for (Index j = 0; j < pairs; ++j) {
    VITC_DCHECK(values[2 * j] >= kInt4Min && values[2 * j] <= kInt4Max);
    VITC_DCHECK(values[2 * j + 1] >= kInt4Min && values[2 * j + 1] <= kInt4Max);
    packed[j] = static_cast<std::uint8_t>(int4_nibble(values[2 * j]) |
                                          (int4_nibble(values[2 * j + 1]) << 4));
  }
  if (k & 1) {
    VITC_DCHECK(values[k - 1] >= kInt4Min && values[k - 1] <= kInt4Max);
    packed[pairs] = int4_nibble(values[k - 1]);  // high nibble: padding, 0
  }
}

// Unpacks k values from int4_row_bytes(k) bytes (a padding nibble is ignored).
inline void unpack_int4_row(const std::uint8_t* packed, Index k, std::int8_t* values) noexcept {
  const Index pairs = k / 2;
  for (Index j = 0; j < pairs; ++j) {
    values[2 * j] = int4_value(packed[j]);
    values[2 * j + 1] = int4_value(static_cast<std::uint8_t>(packed[j] >> 4));
  }
  if (k & 1) values[k - 1] = int4_value(packed[pairs]);
}

// W [N, K] (any strides) -> packed [N, int4_row_bytes(K)]. ArgumentError naming `what` and the
// position of the first value outside [−8, 7].
[[nodiscard]] inline Tensor<std::uint8_t, 2> pack_int4(const TensorView<const std::int8_t, 2>& w,
                                                       const std::string& what = "weights") {
  const Index n = w.extent(0), k = w.extent(1);
  Tensor<std::uint8_t, 2> out({n, int4_row_bytes(k)});
  std::vector<std::int8_t> row(static_cast<std::size_t>(k));
  for (Index r = 0; r < n; ++r) {
    for (Index c = 0; c < k; ++c) {
      const std::int8_t v = w(r, c);
      if (v < kInt4Min || v > kInt4Max)
        VITC_THROW(ArgumentError(what + ": value " + std::to_string(v) + " at [" +
                                 std::to_string(r) + ", " + std::to_string(c) +
                                 "] is outside the int4 range [-8, 7]"));
      row[static_cast<std::size_t>(c)] = v;
    }
    if (k > 0) pack_int4_row(row.data(), k, out.data() + r * out.extent(1));
  }
  return out;
}

// packed [N, int4_row_bytes(K)] (contiguous rows not required) -> W [N, K]. ShapeError naming
// `what` when the packed width does not match K.
[[nodiscard]] inline Tensor<std::int8_t, 2> unpack_int4(
    const TensorView<const std::uint8_t, 2>& packed, Index k,
    const std::string& what = "packed weights") {
  if (k < 0 || packed.extent(1) != int4_row_bytes(k))
    VITC_THROW(ShapeError(what + ": " + std::to_string(packed.extent(1)) +
                          " bytes per row cannot hold K = " + std::to_string(k) +
                          " packed 4-bit values (expected " + std::to_string(int4_row_bytes(k)) +
                          ")"));
  const Index n = packed.extent(0), rb = packed.extent(1);
  Tensor<std::int8_t, 2> out({n, k});
  std::vector<std::uint8_t> row(static_cast<std::size_t>(rb));
  for (Index r = 0; r < n; ++r) {
    for (Index j = 0; j < rb; ++j) row[static_cast<std::size_t>(j)] = packed(r, j);
    if (k > 0) unpack_int4_row(row.data(), k, out.data() + r * k);
  }
  return out;
}

// A 4-bit weight matrix with its scales: the object a 4-bit GEMM consumes.
struct Int4Weights {
  Index rows = 0;                // N, output channels
  Index depth = 0;               // K
  Index group_size = 0;          // G along K; 0 = one group per row (per-channel)
  Tensor<std::uint8_t, 2> data;  // [N, int4_row_bytes(K)]
  Tensor<float, 2> scales;       // [N, groups_per_row()]

  [[nodiscard]] Index effective_group_size() const noexcept {
    return group_size == 0 ? depth : group_size;
  }
  [[nodiscard]] Index groups_per_row() const noexcept {
    const Index g = effective_group_size();
    return g == 0 ? 0 : (depth + g - 1) / g;
  }
  // The real value of W[n, k] (no bounds checks beyond debug builds).
  [[nodiscard]] float value(Index n, Index k) const noexcept {
    const std::uint8_t byte = data(n, k / 2);
    const std::int8_t v = int4_value(static_cast<std::uint8_t>((k & 1) ? byte >> 4 : byte));
    return scales(n, k / effective_group_size()) * static_cast<float>(v);
  }

  // ShapeError / ArgumentError naming `what` unless data and scales agree with rows, depth and
  // group_size (G even, or 0), and every scale is finite.
  void validate(const std::string& what) const {
    if (rows < 0 || depth < 0 || group_size < 0 || (group_size > 0 && (group_size & 1)))
      VITC_THROW(ArgumentError(what + ": group size " + std::to_string(group_size) +
                               " (must be 0 for per-channel, or even)"));
    if (data.shape() != Shape<2>{rows, int4_row_bytes(depth)})
      VITC_THROW(ShapeError(what + ": packed data has shape " +
                            vitc::detail::shape_string(data.shape()) + " for [" +
                            std::to_string(rows) + ", " + std::to_string(depth) + "] weights"));
    if (scales.shape() != Shape<2>{rows, groups_per_row()})
      VITC_THROW(ShapeError(what + ": scales have shape " +
                            vitc::detail::shape_string(scales.shape()) + ", expected [" +
                            std::to_string(rows) + ", " + std::to_string(groups_per_row()) + "]"));
    for (float s : scales.span())
      if (!std::isfinite(s)) VITC_THROW(ArgumentError(what + ": a scale is not finite"));
  }
};

// Packs integer codes W [N, K] in [−8, 7] with their scales [N, ceil(K / G)] (G = group_size, or
// K when 0). Errors as pack_int4 and Int4Weights::validate.
[[nodiscard]] inline Int4Weights make_int4_weights(const TensorView<const std::int8_t, 2>& w,
                                                   const TensorView<const float, 2>& scales,
                                                   Index group_size,
                                                   const std::string& what = "weights") {
  Int4Weights out;
  out.rows = w.extent(0);
  out.depth = w.extent(1);
  out.group_size = group_size;
  out.data = pack_int4(w, what);
  out.scales = Tensor<float, 2>(scales.shape());
  copy_view(scales, out.scales.view());
  out.validate(what);
  return out;
}

}  // namespace vitc::kernels
