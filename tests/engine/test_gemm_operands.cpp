// SPDX-License-Identifier: Apache-2.0
// What the engine asks of the GEMM kernels beyond weights: an activation packed per call as the B
// operand (PackedWeightsInt8::reserved/repack, attention's Kᵀ and V) and a caller-owned
// GemmWorkspace, for the int8 and the 4-bit GEMM, on every path.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "vitcompress/kernels/gemm_int4_packed.hpp"
#include "vitcompress/kernels/gemm_int8.hpp"
#include "vitcompress/kernels/packed_weights_int4.hpp"
#include "vitcompress/kernels/packed_weights_int8.hpp"

namespace gemm_operands_test {

using namespace vitc;
namespace kn = vitc::kernels;

template <class T>
Tensor<T, 2> random_matrix(Index rows, Index cols, int lo, int hi, std::uint64_t seed) {
  Tensor<T, 2> m({rows, cols});
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> u(lo, hi);
  for (T& v : m.span()) v = static_cast<T>(u(rng));
  return m;
}

// The layout's definition read back element by element: every B[k][n], zero padding, column
// sums, −128 flags and largest magnitude computed directly from b (independent of the packing
// code).
bool matches_definition(const kn::PackedWeightsInt8& got, TensorView<const std::int8_t, 2> b) {
  const Index k = b.extent(0), n = b.extent(1), panel = kn::PackedWeightsInt8::kPanel;
  if (got.depth() != k || got.cols() != n) return false;
  int magnitude = 0;
  for (Index kk = 0; kk < k; ++kk)
    for (Index nn = 0; nn < n; ++nn) magnitude = std::max(magnitude, std::abs(int{b(kk, nn)}));
  if (got.max_magnitude() != magnitude) return false;
  for (Index p = 0; p < got.panels(); ++p) {
    bool has_min = false;
    for (Index g = 0; g < got.kgroups(); ++g)
      for (Index c = 0; c < panel; ++c)
        for (Index j = 0; j < 4; ++j) {
          const Index kk = 4 * g + j, nn = p * panel + c;
          const std::int8_t want = kk < k && nn < n ? b(kk, nn) : std::int8_t{0};
          if (got.panel(p)[g * 64 + c * 4 + j] != want) return false;
          has_min |= want == -128;
        }
    if (got.panel_has_min(p) != has_min) return false;
  }
  for (Index nn = 0; nn < got.panels() * panel; ++nn) {
    std::int32_t sum = 0;
    for (Index kk = 0; nn < n && kk < k; ++kk) sum += b(kk, nn);
    if (got.column_sums()[nn] != sum) return false;
  }
  return true;
}

// Same packed bytes, column sums and −128 flags as a freshly packed copy of b, and both equal to
// the layout's definition.
bool same_packing(const kn::PackedWeightsInt8& got, TensorView<const std::int8_t, 2> b) {
  const kn::PackedWeightsInt8 want(b);
  if (!matches_definition(got, b) || !matches_definition(want, b)) return false;
  const Index bytes = want.panels() * want.panel_bytes();
  if (std::memcmp(got.data(), want.data(), static_cast<std::size_t>(bytes)) != 0) return false;
  for (Index n = 0; n < want.panels() * kn::PackedWeightsInt8::kPanel; ++n)
    if (got.column_sums()[n] != want.column_sums()[n]) return false;
  for (Index p = 0; p < want.panels(); ++p)
    if (got.panel_has_min(p) != want.panel_has_min(p)) return false;
  return true;
}

}  // namespace gemm_operands_test

TEST_SUITE("engine") {
  using namespace gemm_operands_test;

  TEST_CASE(
      "repack equals a fresh packing for K-transposed, V and strided views, any shape order") {
    // A key/value-like activation: rows = tokens, columns = head dims (row stride > width).
    const auto kv = random_matrix<std::int8_t>(23, 40, -128, 127, 1);
    auto p = kn::PackedWeightsInt8::reserved(20, 23);
    struct Case {
      Index rows, c0, width;
      bool transposed;
    };
    // Kᵀ (contiguous K), V (contiguous N), then smaller / larger / odd shapes in turn.
    for (const Case c : {Case{23, 0, 16, true}, Case{23, 16, 16, false}, Case{5, 3, 7, true},
                         Case{23, 1, 13, false}, Case{17, 2, 20, true}, Case{1, 0, 1, false},
                         Case{23, 0, 16, true}}) {
      auto v = kv.cview().slice(0, 0, c.rows).slice(1, c.c0, c.c0 + c.width);
      const TensorView<const std::int8_t, 2> b = c.transposed ? v.transposed() : v;
      INFO("rows ", c.rows, " width ", c.width, " transposed ", c.transposed);
      p.repack(b);
      CHECK(same_packing(p, b));
    }
    // −128 in one panel only: its flag set, the others clear, on both fast paths.
    auto one_min = random_matrix<std::int8_t>(23, 40, -127, 127, 3);
    one_min(5, 19) = -128;
    p.repack(one_min.cview());
    CHECK(same_packing(p, one_min.cview()));
    CHECK(p.panel_has_min(1));
    CHECK(!p.panel_has_min(0));
    p.repack(one_min.cview().slice(1, 0, 21).transposed());
    CHECK(same_packing(p, one_min.cview().slice(1, 0, 21).transposed()));
    CHECK(p.panel_has_min(0));
    CHECK(!p.panel_has_min(1));
    // A generic strided view (neither dimension contiguous) and a B larger than reserved.
    const TensorView<const std::int8_t, 2> strided(kv.data(), {10, 11}, {80, 3});
    p.repack(strided);
    CHECK(same_packing(p, strided));
    const auto big = random_matrix<std::int8_t>(70, 50, -128, 127, 2);
    p.repack(big.cview());
    CHECK(same_packing(p, big.cview()));
    // Smaller weights after larger ones: the magnitude is that of the new B only.
    const auto small = random_matrix<std::int8_t>(23, 20, -5, 5, 6);
    p.repack(small.cview());
    CHECK(same_packing(p, small.cview()));
    CHECK(p.max_magnitude() <= 5);
  }

  TEST_CASE_TEMPLATE("a GemmWorkspace gives the same result and stops allocating", Arch,
                     VITC_KERNEL_ARCH_TAGS) {
    if (!Arch::available()) return;
    const Index m = 37, k = 72, n = 45;
    const auto a = random_matrix<std::uint8_t>(m, k, 0, 255, 3);
    const auto w = random_matrix<std::int8_t>(k, n, -128, 127, 4);
    const auto w4 = random_matrix<std::int8_t>(k, n, -8, 7, 5);
    const kn::PackedWeightsInt8 b(w.cview());
    const std::vector<float> scales(static_cast<std::size_t>(n), 0.5f);
    const kn::PackedWeightsInt4 b4(w4.cview(), scales, 0);
    kn::GemmWorkspace ws;
    ws.reserve(m, k, n);
    const Index cap = ws.capacity();
    Tensor<std::int32_t, 2> c0({m, n}), c1({m, n}), c2({m, n}), c3({m, n});
    kn::gemm_int8<Arch>(a.cview(), 17, b, c0.view());
    kn::gemm_int8<Arch>(a.cview(), 17, b, c1.view(), Sequential{}, &ws);
    CHECK(std::memcmp(c0.data(), c1.data(), sizeof(std::int32_t) * m * n) == 0);
    kn::gemm_int4<Arch>(a.cview(), 9, b4, c2.view());
    kn::gemm_int4<Arch>(a.cview(), 9, b4, c3.view(), Sequential{}, &ws);
    CHECK(std::memcmp(c2.data(), c3.data(), sizeof(std::int32_t) * m * n) == 0);
    // Smaller calls reuse the buffers.
    kn::gemm_int8<Arch>(a.cview().slice(0, 0, 5), 17, b, c1.view().slice(0, 0, 5), Sequential{},
                        &ws);
    CHECK(ws.capacity() == cap);
    // The activation product the engine computes: uint8 rows × a repacked int8 activation.
    auto kp = kn::PackedWeightsInt8::reserved(k, m);
    const auto keys = random_matrix<std::int8_t>(m, k, -127, 127, 6);
    kp.repack(keys.cview().transposed());
    Tensor<std::int32_t, 2> s0({m, m}), s1({m, m});
    kn::gemm_int8<kn::arch::Scalar>(a.cview(), 100,
                                    kn::PackedWeightsInt8(keys.cview().transposed()), s0.view());
    kn::gemm_int8<Arch>(a.cview(), 100, kp, s1.view(), Sequential{}, &ws);
    CHECK(std::memcmp(s0.data(), s1.data(), sizeof(std::int32_t) * m * m) == 0);
    CHECK(ws.capacity() == cap);
  }
}
