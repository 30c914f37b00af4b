// SPDX-License-Identifier: Apache-2.0
#pragma once
// engine::StageProfile: where the time of one integer ViT forward goes, stage by stage and block
// by block (the per-layer latency breakdown of PQV-Mobile's Figure 3).
//
// Why: the engine's GEMMs run near the int8 peak, so what makes a model slow is found only by
// timing every stage of the real run. IntViT::run(images, logits, &profile) fills one; the plain
// run(images, logits) compiles the timing out (a template flag, no branch per stage).
//
// Stages (Stage enum, in forward order):
//   patch_embed   input quantization, patch GEMM, requantization into the residual codes
//   norm1         Int-LayerNorm before attention
//   qkv           the Q and K/V GEMMs with their fused requantization
//   qk            Q·Kᵀ (int32 scores)
//   softmax       the integer softmax
//   pv            P·V with its requantization into the proj input
//   proj_residual proj GEMM + residual add requantized
//   norm2         Int-LayerNorm before the MLP
//   fc1_gelu      fc1 GEMM + GELU into the fc2 input codes
//   fc2_residual  fc2 GEMM + residual add requantized
//   head          final LayerNorm of the class tokens, head GEMM, logit dequantization
// patch_embed and head belong to no block (block index −1); the others are kept per block.
//
// Times are wall-clock nanoseconds (std::chrono::steady_clock) accumulated over runs, with the
// number of calls. Q·Kᵀ, softmax and P·V are interleaved per (image, head) inside one parallel
// loop: their wall time, as a whole, is measured, and split among the three in proportion to the
// time each took summed over the threads (with one thread, each is timed exactly).

#include <array>
#include <chrono>
#include <cstdint>
#include <string_view>
#include <vector>

#include "vitcompress/core/check.hpp"
#include "vitcompress/core/error.hpp"

namespace vitc::engine {

enum class Stage : int {
  kPatchEmbed,
  kNorm1,
  kQkv,
  kQk,
  kSoftmax,
  kPv,
  kProjResidual,
  kNorm2,
  kFc1Gelu,
  kFc2Residual,
  kHead,
};
inline constexpr int kStageCount = 11;

[[nodiscard]] constexpr std::string_view stage_name(Stage s) noexcept {
  constexpr std::array<std::string_view, kStageCount> names = {
      "patch_embed",   "norm1", "qkv",      "qk",           "softmax", "pv",
      "proj_residual", "norm2", "fc1_gelu", "fc2_residual", "head"};
  return names[static_cast<std::size_t>(s)];
}

struct StageTime {
  std::int64_t ns = 0;
  std::int64_t calls = 0;
};

class StageProfile {
 public:
  StageProfile() = default;
  explicit StageProfile(int blocks) { reset(blocks); }

  // Clears all times for a model of `blocks` blocks.
  void reset(int blocks) {
    if (blocks < 0) VITC_THROW(ArgumentError("StageProfile: blocks must be >= 0"));
    blocks_ = blocks;
    runs_ = 0;
    times_.assign(static_cast<std::size_t>(blocks + 1) * kStageCount, StageTime{});
  }

  [[nodiscard]] int blocks() const noexcept { return blocks_; }
  // Forward passes recorded.
  [[nodiscard]] std::int64_t runs() const noexcept { return runs_; }
  void add_run() noexcept { ++runs_; }

  // Stage s of block `block` (−1: outside the blocks, for patch_embed and head).
  [[nodiscard]] StageTime& at(Stage s, int block) noexcept { return times_[index(s, block)]; }
  [[nodiscard]] const StageTime& at(Stage s, int block) const noexcept {
    return times_[index(s, block)];
  }
  void add(Stage s, int block, std::int64_t ns) noexcept {
    StageTime& t = at(s, block);
    t.ns += ns;
    ++t.calls;
  }

  // Stage s summed over all blocks (and outside them).
  [[nodiscard]] std::int64_t stage_ns(Stage s) const noexcept {
    std::int64_t n = 0;
    for (int b = -1; b < blocks_; ++b) n += at(s, b).ns;
    return n;
  }
  // All stages of one block (−1: patch_embed + head).
  [[nodiscard]] std::int64_t block_ns(int block) const noexcept {
    std::int64_t n = 0;
    for (int s = 0; s < kStageCount; ++s) n += at(static_cast<Stage>(s), block).ns;
    return n;
  }
  [[nodiscard]] std::int64_t total_ns() const noexcept {
    std::int64_t n = 0;
    for (const StageTime& t : times_) n += t.ns;
    return n;
  }

 private:
  [[nodiscard]] std::size_t index(Stage s, int block) const noexcept {
    VITC_DCHECK(block >= -1 && block < blocks_);
    return static_cast<std::size_t>(block + 1) * kStageCount + static_cast<std::size_t>(s);
  }

  int blocks_ = 0;
  std::int64_t runs_ = 0;
  std::vector<StageTime> times_;
};

namespace detail {

// Marks the end of each stage while profiling: mark(s, block) adds the time since the previous
// mark (or start) to stage s. StageClock<false> does nothing and compiles away.
template <bool kOn>
class StageClock;

template <>
class StageClock<false> {
 public:
  static constexpr bool kOn = false;
  explicit StageClock(StageProfile* /*p*/) noexcept {}
  void mark(Stage /*s*/, int /*block*/) noexcept {}
  template <std::size_t N>
  void mark_split(int /*block*/, const std::array<Stage, N>& /*s*/,
                  const std::array<std::int64_t, N>& /*w*/) noexcept {}
  [[nodiscard]] static std::int64_t now_ns() noexcept { return 0; }
  void restart() noexcept {}
  [[nodiscard]] StageProfile* profile() const noexcept { return nullptr; }
};

template <>
class StageClock<true> {
 public:
  static constexpr bool kOn = true;
  explicit StageClock(StageProfile* p) noexcept : p_(p), last_(now_ns()) {}
  void mark(Stage s, int block) noexcept {
    const std::int64_t t = now_ns();
    p_->add(s, block, t - last_);
    last_ = t;
  }
  // The time since the last mark, split among stages s[i] in proportion to w[i] (equally when
  // every w[i] is 0); the parts sum to the elapsed time.
  template <std::size_t N>
  void mark_split(int block, const std::array<Stage, N>& s,
                  const std::array<std::int64_t, N>& w) noexcept {
    const std::int64_t t = now_ns(), elapsed = t - last_;
    std::int64_t sum = 0;
    for (std::int64_t v : w) sum += v;
    std::int64_t given = 0;
    for (std::size_t i = 0; i < N; ++i) {
      const std::int64_t part =
          i + 1 == N ? elapsed - given
                     : (sum > 0 ? static_cast<std::int64_t>(static_cast<double>(elapsed) *
                                                            static_cast<double>(w[i]) /
                                                            static_cast<double>(sum))
                                : elapsed / static_cast<std::int64_t>(N));
      p_->add(s[i], block, part);
      given += part;
    }
    last_ = t;
  }
  void restart() noexcept { last_ = now_ns(); }
  [[nodiscard]] static std::int64_t now_ns() noexcept {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
  [[nodiscard]] StageProfile* profile() const noexcept { return p_; }

 private:
  StageProfile* p_;
  std::int64_t last_;
};

}  // namespace detail

}  // namespace vitc::engine
