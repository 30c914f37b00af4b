// SPDX-License-Identifier: Apache-2.0
#pragma once
// Granularity: which elements of a tensor share one set of quantization parameters.
//
// Quantizers work on 2-D views [rows, cols] (a weight [out, in], an activation [tokens, channels];
// a Conv2d kernel [D, C, P, P] is viewed as [D, C·P·P]). The elements are partitioned into groups,
// each with its own QuantParams, numbered as follows:
//
//   PerTensor        one group, number 0
//   PerChannel{0}    one group per row: element (r, c) is in group r        (weights: per output
//                                                                            channel)
//   PerChannel{1}    one group per column: element (r, c) is in group c     (activations: per
//                                                                            channel of a token)
//   PerGroup<G>      each row cut into runs of G consecutive columns (the last run may be shorter):
//                    element (r, c) is in group r·ceil(cols / G) + c / G    (weights: block-wise
//                                                                            along K, as ggml and
//                                                                            ONNX MatMulNBits)
//
// The tags are empty types (PerChannel holds its axis) convertible to the runtime GranularitySpec,
// which configurations and checkpoints carry.

#include <algorithm>
#include <concepts>
#include <cstdint>
#include <string>

#include "vitcompress/core/error.hpp"
#include "vitcompress/core/tensor.hpp"

namespace vitc::quant {

enum class GranularityKind : int { kTensor, kChannel, kGroup };

[[nodiscard]] inline const char* to_string(GranularityKind kind) noexcept {
  switch (kind) {
    case GranularityKind::kTensor:
      return "tensor";
    case GranularityKind::kChannel:
      return "channel";
    case GranularityKind::kGroup:
      return "group";
  }
  return "unknown";
}

struct GranularitySpec {
  GranularityKind kind = GranularityKind::kTensor;
  int axis = 0;          // kChannel: 0 (rows) or 1 (columns)
  Index group_size = 0;  // kGroup: G > 0, groups along axis 1

  // Throws ArgumentError naming `what` for an axis other than 0/1 or a group size < 1.
  void validate(const std::string& what) const {
    if (kind == GranularityKind::kChannel && axis != 0 && axis != 1)
      VITC_THROW(ArgumentError(what + ": per-channel axis " + std::to_string(axis) +
                               " of a 2-D tensor (use 0 or 1)"));
    if (kind == GranularityKind::kGroup && group_size < 1)
      VITC_THROW(
          ArgumentError(what + ": group size " + std::to_string(group_size) + " (must be >= 1)"));
  }

  // Number of groups of a [rows, cols] tensor.
  [[nodiscard]] Index num_groups(Index rows, Index cols) const noexcept {
    switch (kind) {
      case GranularityKind::kTensor:
        return 1;
      case GranularityKind::kChannel:
        return axis == 0 ? rows : cols;
      case GranularityKind::kGroup:
        return rows * ((cols + group_size - 1) / group_size);
    }
    return 1;
  }

  friend constexpr bool operator==(const GranularitySpec&, const GranularitySpec&) = default;
};

struct PerTensor {
  [[nodiscard]] static constexpr GranularitySpec spec() noexcept { return {}; }
};

struct PerChannel {
  int axis = 0;
  [[nodiscard]] constexpr GranularitySpec spec() const noexcept {
    return {GranularityKind::kChannel, axis, 0};
  }
};

template <Index G>
requires(G > 0) struct PerGroup {
  static constexpr Index kGroupSize = G;
  [[nodiscard]] static constexpr GranularitySpec spec() noexcept {
    return {GranularityKind::kGroup, 1, G};
  }
};

// A granularity tag: an object whose spec() gives a GranularitySpec.
template <class G>
concept QuantGranularity = requires(const G& g) {
  { g.spec() } -> std::convertible_to<GranularitySpec>;
};

// Calls f(r, c0, c1, group) for every maximal run of columns [c0, c1) of row r whose elements share
// one group, rows in order, runs left to right. Per-column granularity gives runs of length 1.
template <class F>
void for_each_group_run(const GranularitySpec& g, Index rows, Index cols, F&& f) {
  for (Index r = 0; r < rows; ++r) {
    switch (g.kind) {
      case GranularityKind::kTensor:
        f(r, Index{0}, cols, Index{0});
        break;
      case GranularityKind::kChannel:
        if (g.axis == 0) {
          f(r, Index{0}, cols, r);
        } else {
          for (Index c = 0; c < cols; ++c) f(r, c, c + 1, c);
        }
        break;
      case GranularityKind::kGroup: {
        const Index per_row = (cols + g.group_size - 1) / g.group_size;
        for (Index j = 0; j < per_row; ++j)
          f(r, j * g.group_size, std::min(cols, (j + 1) * g.group_size), r * per_row + j);
        break;
      }
    }
  }
}

}  // namespace vitc::quant
