// SPDX-License-Identifier: Apache-2.0
#pragma once
// Internals shared by the int8 GEMM paths: the problem description, activation packing and the
// output pipeline applied to a row of accumulators.

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <type_traits>

#include "vitcompress/core/tensor.hpp"
#include "vitcompress/kernels/output_stage.hpp"
#include "vitcompress/kernels/packed_weights_int8.hpp"

#if defined(__GNUC__) || defined(__clang__)
#define VITC_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define VITC_ALWAYS_INLINE inline
#endif

namespace vitc::kernels::detail {

// An uninitialized, 64-byte aligned scratch buffer (operands packed per call).
struct AlignedDelete {
  void operator()(void* q) const noexcept { ::operator delete[](q, std::align_val_t{64}); }
};
template <class T>
using ScratchPtr = std::unique_ptr<T[], AlignedDelete>;
template <class T>
ScratchPtr<T> scratch(Index n) {
  const auto bytes = static_cast<std::size_t>(std::max<Index>(n, 1)) * sizeof(T);
  return ScratchPtr<T>(static_cast<T*>(::operator new[](bytes, std::align_val_t{64})));
}
inline ScratchPtr<std::uint8_t> scratch_bytes(Index n) { return scratch<std::uint8_t>(n); }

}  // namespace vitc::kernels::detail

namespace vitc::kernels {

// Caller-owned scratch of the integer GEMMs (gemm_int8, gemm_int4): the packed activations, the
// column corrections and (int4) the activation row sums. Pass one to a GEMM call and that call
// allocates nothing once the buffers are large enough: they grow on demand and are kept, and
// reserve() sizes them in advance for every path. One workspace serves one call at a time (the
// GEMM fills it on the calling thread before splitting work across a pool).
class GemmWorkspace {
 public:
  static constexpr int kSlots = 3;  // 0: packed A, 1: column corrections, 2: A row sums

  // Sizes the buffers for any GEMM of up to m rows, depth k and n columns on any path, with up to
  // `groups` weight groups along K (int4 per-group weights; 1 otherwise).
  void reserve(Index m, Index k, Index n, Index groups = 1) {
    const Index kblocks = (k + 7) / 8;                  // int4 blocks of 8; >= int8 groups of 4 / 2
    ensure(0, m * kblocks * 2 * 2 * 4);                 // xsimd int32 pairs (the largest layout)
    ensure(1, groups * ((n + 15) / 16 * 16) * 4 + 64);  // int32 per padded column (and group)
    ensure(2, m * groups * 4 + 64);                     // int32 per row and group
  }
  // A 64-byte aligned buffer of at least `count` T in `slot` (grows it if needed).
  template <class T>
  [[nodiscard]] T* get(int slot, Index count) {
    ensure(slot, count * static_cast<Index>(sizeof(T)));
    return reinterpret_cast<T*>(buf_[slot].get());
  }
  // Bytes currently held.
  [[nodiscard]] Index capacity() const noexcept {
    Index n = 0;
    for (Index c : cap_) n += c;
    return n;
  }

 private:
  void ensure(int slot, Index bytes) {
    if (bytes > cap_[slot] || !buf_[slot]) {
      const Index b = std::max<Index>(bytes, 64);
      buf_[slot] = detail::scratch_bytes(b);
      cap_[slot] = b;
    }
  }
  detail::ScratchPtr<std::uint8_t> buf_[kSlots];
  Index cap_[kSlots] = {};
};

}  // namespace vitc::kernels

namespace vitc::kernels::detail {

// A scratch buffer taken from the caller's workspace when there is one, else owned by the call.
template <class T>
struct ScratchRef {
  ScratchPtr<T> owned;
  T* ptr = nullptr;
  [[nodiscard]] T* get() const noexcept { return ptr; }
  T& operator[](std::size_t i) const noexcept { return ptr[i]; }
};
template <class T>
ScratchRef<T> scratch_in(GemmWorkspace* ws, int slot, Index n) {
  if (ws != nullptr) return {nullptr, ws->get<T>(slot, std::max<Index>(n, 1))};
  ScratchPtr<T> o = scratch<T>(n);
  T* q = o.get();
  return {std::move(o), q};
}

// C[M×N] = pipeline((A − a_zero_point)·B); A has any strides, C has column stride 1.
template <class AT, class OutT>
struct GemmInt8Problem {
  const AT* a = nullptr;
  Index a_row_stride = 0, a_col_stride = 1;
  std::int32_t a_zero_point = 0;
  Index m = 0, k = 0, n = 0;
  const PackedWeightsInt8* b = nullptr;
  OutT* c = nullptr;
  Index c_row_stride = 0;
  GemmWorkspace* ws = nullptr;  // the caller's scratch, or null (the call allocates its own)

  [[nodiscard]] AT a_at(Index i, Index j) const noexcept {
    return a[i * a_row_stride + j * a_col_stride];
  }
};

// From this many rows of A, the VNNI paths on several threads split rows rather than columns:
// each thread packs its own rows and sweeps every panel (fewer rows: reading B dominates).
inline constexpr Index kRowSplitMin = 64;

// Rows [r0, r1) of a GEMM problem (int8 or int4): A's and C's rows, the same B.
template <class Problem>
[[nodiscard]] Problem row_slice(const Problem& p, Index r0, Index r1) noexcept {
  Problem rows = p;
  rows.a = p.a + r0 * p.a_row_stride;
  rows.m = r1 - r0;
  rows.c = p.c + r0 * p.c_row_stride;
  return rows;
}

// Copies A into rows of `ld` bytes (ld >= K, a multiple of 4), each byte XOR `flip` (0x80 turns
// int8 a into the uint8 a + 128, or uint8 a into the int8 a − 128), zero-filling columns K..ld.
// The problem's fields are copied to locals first: stores through a byte pointer may alias
// anything, so reading them from `p` inside the loops would forbid vectorization.
template <class AT, class OutT>
void pack_activations(const GemmInt8Problem<AT, OutT>& p, std::uint8_t* dst, Index ld,
                      std::uint8_t flip) noexcept {
  const auto* a = reinterpret_cast<const std::uint8_t*>(p.a);
  const Index m = p.m, k = p.k, rs = p.a_row_stride, cs = p.a_col_stride;
  for (Index i = 0; i < m; ++i) {
    std::uint8_t* row = dst + i * ld;
    const std::uint8_t* src = a + i * rs;
    if (cs == 1) {
      for (Index j = 0; j < k; ++j) row[j] = static_cast<std::uint8_t>(src[j] ^ flip);
    } else {
      for (Index j = 0; j < k; ++j) row[j] = static_cast<std::uint8_t>(src[j * cs] ^ flip);
    }
    std::memset(row + k, 0, static_cast<std::size_t>(ld - k));
  }
}

// −offset·colsum[n] for every padded column (panels·16 entries), computed once per call so that
// the microkernels start their accumulators from it.
inline ScratchRef<std::int32_t> column_corrections(const PackedWeightsInt8& b, std::int32_t offset,
                                                   GemmWorkspace* ws) {
  auto out = scratch_in<std::int32_t>(ws, 1, b.panels() * PackedWeightsInt8::kPanel);
  const std::int32_t* cs = b.column_sums();
  for (Index j = 0; j < b.panels() * PackedWeightsInt8::kPanel; ++j)
    out[static_cast<std::size_t>(j)] = static_cast<std::int32_t>(
        static_cast<std::uint32_t>(-offset) * static_cast<std::uint32_t>(cs[j]));
  return out;
}

// dst[j] = pipeline(acc[j]) for output columns n0 .. n0 + count − 1.
template <class Pipeline, class OutT>
VITC_ALWAYS_INLINE void apply_pipeline_row(const Pipeline& pipeline, const std::int32_t* acc,
                                           Index n0, Index count, OutT* dst) noexcept {
  const Pipeline local = pipeline;  // byte stores to dst could alias the stages' parameters
  for (Index j = 0; j < count; ++j) dst[j] = eval_pipeline(local, acc[j], n0 + j);
}

// The int32 value the GEMM defines for C[i][j] before the output pipeline, computed with
// the packed B. Used by the scalar path.
template <class AT, class OutT>
[[nodiscard]] std::int32_t reference_accumulator(const GemmInt8Problem<AT, OutT>& p, Index i,
                                                 Index j) noexcept {
  std::int32_t acc = 0;
  for (Index k = 0; k < p.k; ++k)
    acc += (static_cast<std::int32_t>(p.a_at(i, k)) - p.a_zero_point) * p.b->at(k, j);
  return acc;
}

}  // namespace vitc::kernels::detail
