// SPDX-License-Identifier: Apache-2.0
#pragma once
// A lookup table over every int16 code, held by its steps: the engine's GELU table without the
// gather.
//
// Why: the GELU of the fc1 output is a table of 2^16 int8 codes (engine/int_vit.hpp, TableGelu).
// On Zen 4 a vpgatherdd of 16 bytes from it costs about 28 cycles, which made the table pass
// nearly as slow as the fc1 GEMM. But the table is a step function with few steps: its codes rise
// at most 255 times and fall a few times (GELU dips below zero once). So
//
//   table[x] = table[−32768] + #{u ∈ U : u <= x} − #{d ∈ D : d <= x},
//
// where U (D) lists each x with table[x] > table[x − 1] (<), repeated by the size of the step.
// Each count is a branch-free binary search over a sorted list of at most 255 keys in Eytzinger
// order (node i has children 2i and 2i + 1), 32 int16 lanes at a time: the keys of one tree level
// come from one vpermw / vpermi2w, so a lookup is a few permutes and compares per level with no
// memory access. build() checks the representation against every entry of the table; a table
// with more steps (none the engine makes) leaves it unusable and the caller keeps the gather.

#include <algorithm>
#include <array>
#include <bit>
#include <cstdint>

#include "vitcompress/core/tensor.hpp"
#include "vitcompress/kernels/arch.hpp"

#if VITC_HAVE_X86_TARGET_KERNELS
#include <immintrin.h>
#endif

namespace vitc::engine::detail {

// Sorted keys of one step direction, as an implicit search tree of depth `depth` (0..8).
struct StepTree {
  // node[i] for i in [1, 2^depth), in Eytzinger order; node[0] and unused nodes hold 32767,
  // which no int16 exceeds. Keys are stored as u − 1, so "x > node" means "x >= u".
  alignas(64) std::array<std::int16_t, 256> node{};
  int depth = 0;

  // #{keys <= x}.
  [[nodiscard]] int count(std::int16_t x) const noexcept {
    unsigned i = 1;
    for (int level = 0; level < depth; ++level) i = 2 * i + (x > node[i] ? 1u : 0u);
    return static_cast<int>(i - (1u << depth));
  }
};

struct StepTable {
  std::int16_t base = 0;  // table[−32768]
  StepTree up, down;
  bool usable = false;

  // table[x] for any int16 x (the definition the SIMD path equals).
  [[nodiscard]] std::int8_t at(std::int16_t x) const noexcept {
    return static_cast<std::int8_t>(base + up.count(x) - down.count(x));
  }
};

namespace step_table_detail {
// Fills tree.node with `keys` (sorted, at most 255) in Eytzinger order.
inline void fill_tree(StepTree& tree, const std::int16_t* keys, int n) noexcept {
  tree.node.fill(32767);
  tree.depth = n == 0 ? 0 : std::bit_width(static_cast<unsigned>(n));
  const unsigned size = 1u << tree.depth;
  int next = 0;
  // In-order traversal of the complete tree: the k-th visited node gets the k-th key.
  auto visit = [&](auto&& self, unsigned i) -> void {
    if (i >= size) return;
    self(self, 2 * i);
    tree.node[i] = next < n ? static_cast<std::int16_t>(keys[next] - 1) : std::int16_t{32767};
    ++next;
    self(self, 2 * i + 1);
  };
  visit(visit, 1);
}
}  // namespace step_table_detail

// The step form of table[x], x in [−32768, 32767] (`table` points at the entry of x = 0).
[[nodiscard]] inline StepTable build_step_table(const std::int8_t* table) {
  StepTable t;
  std::array<std::int16_t, 255> up{}, down{};
  int n_up = 0, n_down = 0;
  for (int x = -32767; x < 32768; ++x) {
    int step = table[x] - table[x - 1];
    for (; step > 0; --step) {
      if (n_up == 255) return t;
      up[static_cast<std::size_t>(n_up++)] = static_cast<std::int16_t>(x);
    }
    for (; step < 0; ++step) {
      if (n_down == 255) return t;
      down[static_cast<std::size_t>(n_down++)] = static_cast<std::int16_t>(x);
    }
  }
  t.base = table[-32768];
  step_table_detail::fill_tree(t.up, up.data(), n_up);
  step_table_detail::fill_tree(t.down, down.data(), n_down);
  for (int x = -32768; x < 32768; ++x)
    if (t.at(static_cast<std::int16_t>(x)) != table[x]) return t;
  t.usable = true;
  return t;
}

#if VITC_HAVE_X86_TARGET_KERNELS
// GCC 12 reports the _mm256_undefined_si256() pass-through operand of its own vpmovwb intrinsic
// as uninitialized once inlined here (GCC bug 105593, a false positive; see
// kernels/detail/output_stage_simd.hpp). Silenced for the AVX-512 code only.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
namespace step_table_detail {
// #{keys <= x} on kV vectors of 32 int16 lanes at once (independent chains hide the latency of
// each level): one tree level per step, the level's keys by permutes.
template <int kV>
VITC_TARGET_AVX512VNNI inline void count_512(const StepTree& t, const __m512i* x,
                                             __m512i* count) noexcept {
  __m512i z[8];
  for (int k = 0; k < 8; ++k) z[k] = _mm512_load_si512(t.node.data() + 32 * k);
  const __m512i one = _mm512_set1_epi16(1), bit6 = _mm512_set1_epi16(64);
  __m512i i[kV];
  for (int v = 0; v < kV; ++v) i[v] = one;
  for (int level = 1; level <= t.depth; ++level)
    for (int v = 0; v < kV; ++v) {
      __m512i key;
      if (level <= 5) {
        key = _mm512_permutexvar_epi16(i[v], z[0]);
      } else if (level == 6) {
        key = _mm512_permutexvar_epi16(i[v], z[1]);
      } else if (level == 7) {
        key = _mm512_permutex2var_epi16(z[2], i[v], z[3]);
      } else {
        const __m512i lo = _mm512_permutex2var_epi16(z[4], i[v], z[5]);
        const __m512i hi = _mm512_permutex2var_epi16(z[6], i[v], z[7]);
        key = _mm512_mask_blend_epi16(_mm512_test_epi16_mask(i[v], bit6), lo, hi);
      }
      i[v] = _mm512_add_epi16(i[v], i[v]);
      i[v] = _mm512_mask_add_epi16(i[v], _mm512_cmpgt_epi16_mask(x[v], key), i[v], one);
    }
  const __m512i leaves = _mm512_set1_epi16(static_cast<std::int16_t>(1 << t.depth));
  for (int v = 0; v < kV; ++v) count[v] = _mm512_sub_epi16(i[v], leaves);
}

// kV vectors of 32 lanes from in[0 .. n), n <= 32·kV (masked at the end).
template <int kV>
VITC_TARGET_AVX512VNNI inline void lookup_block_512(const StepTable& t, const std::int16_t* in,
                                                    std::int8_t* out, Index n) noexcept {
  __m512i x[kV], up[kV], down[kV];
  __mmask32 mask[kV];
  for (int v = 0; v < kV; ++v) {
    const Index left = std::clamp<Index>(n - 32 * v, 0, 32);
    mask[v] = left == 32 ? ~__mmask32{0} : (__mmask32{1} << left) - 1;
    x[v] = _mm512_maskz_loadu_epi16(mask[v], in + 32 * v);
  }
  count_512<kV>(t.up, x, up);
  count_512<kV>(t.down, x, down);
  const __m512i base = _mm512_set1_epi16(t.base);
  for (int v = 0; v < kV; ++v)
    _mm256_mask_storeu_epi8(
        out + 32 * v, mask[v],
        _mm512_cvtepi16_epi8(_mm512_sub_epi16(_mm512_add_epi16(base, up[v]), down[v])));
}
}  // namespace step_table_detail

// out[c] = table[in[c]] for c < n, from the step form (t.usable).
VITC_TARGET_AVX512VNNI inline void step_lookup_avx512(const StepTable& t, const std::int16_t* in,
                                                      std::int8_t* out, Index n) noexcept {
  constexpr int kV = 4;
  for (Index c = 0; c < n; c += 32 * kV)
    step_table_detail::lookup_block_512<kV>(t, in + c, out + c, std::min<Index>(n - c, 32 * kV));
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif

}  // namespace vitc::engine::detail
