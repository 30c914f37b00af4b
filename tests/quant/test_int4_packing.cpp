// SPDX-License-Identifier: Apache-2.0
// kernels/int4_packing.hpp: the packed signed 4-bit layout (tested here, with the quantizer that
// writes it).
#include <doctest/doctest.h>

#include <cstdint>
#include <random>
#include <vector>

#include "quant_test_util.hpp"
#include "vitcompress/kernels/int4_packing.hpp"
#include "vitcompress/quant/quantizer.hpp"

namespace {

using namespace vitc;
using namespace vitc::kernels;

Tensor<std::int8_t, 2> random_int4(Index n, Index k, std::uint64_t seed) {
  Tensor<std::int8_t, 2> w({n, k});
  std::mt19937_64 rng(seed);
  for (auto& v : w.span()) v = static_cast<std::int8_t>(static_cast<int>(rng() % 16) - 8);
  return w;
}

}  // namespace

TEST_SUITE("quant") {
  TEST_CASE("int4: nibble order, sign and padding of a hand-packed row") {
    const std::int8_t values[] = {1, -1, 7, -8, 0, 5, -3};
    std::uint8_t packed[4] = {0xAA, 0xAA, 0xAA, 0xAA};
    pack_int4_row(values, 7, packed);
    CHECK(packed[0] == 0xF1);  // low nibble = element 0 (1), high = element 1 (−1 = 0xF)
    CHECK(packed[1] == 0x87);  // 7, −8
    CHECK(packed[2] == 0x50);  // 0, 5
    CHECK(packed[3] == 0x0D);  // −3 = 0xD, padding nibble 0
    std::int8_t back[7] = {};
    unpack_int4_row(packed, 7, back);
    for (int i = 0; i < 7; ++i) CHECK(back[i] == values[i]);
    for (int v = -8; v <= 7; ++v) CHECK(int4_value(int4_nibble(static_cast<std::int8_t>(v))) == v);
    // MatMulNBits (offset 8, unsigned nibbles) is this layout XOR 0x88.
    CHECK((packed[0] ^ 0x88) == ((1 + 8) | ((-1 + 8) << 4)));
  }

  TEST_CASE("int4: pack/unpack round trip is bit-exact for odd and even K") {
    for (Index k : {1, 2, 3, 5, 31, 32, 33, 63, 64, 65, 96, 127, 128, 129, 191, 192, 255}) {
      CAPTURE(k);
      const auto w = random_int4(5, k, 100 + static_cast<std::uint64_t>(k));
      const auto packed = pack_int4(w.cview(), "w");
      REQUIRE(packed.shape() == Shape<2>{5, (k + 1) / 2});
      const auto back = unpack_int4(packed.cview(), k, "w");
      REQUIRE(back.shape() == w.shape());
      for (Index i = 0; i < w.size(); ++i) REQUIRE(back.data()[i] == w.data()[i]);
      if (k % 2 == 1)
        for (Index r = 0; r < 5; ++r) CHECK((packed(r, k / 2) >> 4) == 0);  // padding nibble
      // Every byte holds elements 2j (low) and 2j + 1 (high).
      for (Index r = 0; r < 5; ++r)
        for (Index j = 0; j < k / 2; ++j)
          REQUIRE(packed(r, j) ==
                  static_cast<std::uint8_t>((w(r, 2 * j) & 0xF) | ((w(r, 2 * j + 1) & 0xF) << 4)));
    }
    // Strided input: the transposed view of a [K, N] matrix.
    const auto wt = random_int4(33, 4, 77);
    const auto packed = pack_int4(wt.cview().transposed(), "wt");
    const auto back = unpack_int4(packed.cview(), 33, "wt");
    for (Index n = 0; n < 4; ++n)
      for (Index k = 0; k < 33; ++k) CHECK(back(n, k) == wt(k, n));
  }

  TEST_CASE("int4: every group size, with scales, through the quantizer") {
    // Every even group size from 2 to 256, and per-channel (0); K odd, even, below and above G.
    for (Index g : {Index{0}, Index{2}, Index{4}, Index{8}, Index{16}, Index{32}, Index{64},
                    Index{128}, Index{256}}) {
      for (Index k : {Index{1}, Index{7}, Index{33}, Index{96}, Index{129}, Index{255}, Index{256},
                      Index{257}}) {
        CAPTURE(g);
        CAPTURE(k);
        const auto x = test::uniform_tensor(7, k, -1.5f, 1.0f, 31 + static_cast<std::uint64_t>(k));
        const quant::GranularitySpec gran =
            g == 0 ? quant::PerChannel{0}.spec()
                   : quant::GranularitySpec{quant::GranularityKind::kGroup, 1, g};
        const quant::QuantSpec spec{quant::Symmetric<4>::kSpec, gran};
        const auto p =
            quant::params_from_ranges(spec, quant::group_ranges(x.cview(), gran, "w"), "w");
        const auto codes = quant::quantize<std::int8_t>(x.cview(), p, "w");
        const Index groups = g == 0 ? 1 : (k + g - 1) / g;
        Tensor<float, 2> scales({7, groups});
        for (Index i = 0; i < scales.size(); ++i)
          scales.data()[i] = p.scales[static_cast<std::size_t>(i)];
        const Int4Weights packed = make_int4_weights(codes.cview(), scales.cview(), g, "w");
        REQUIRE(packed.groups_per_row() == groups);
        Tensor<float, 2> fq(x.shape());
        quant::fake_quantize(x.cview(), p, fq.view(), "w");
        for (Index n = 0; n < 7; ++n)
          for (Index c = 0; c < k; ++c) REQUIRE(packed.value(n, c) == fq(n, c));
        // Each group starts on a byte boundary: unpacking its bytes alone gives its codes.
        const Index gs = packed.effective_group_size();
        for (Index grp = 0; grp < groups; ++grp) {
          const Index k0 = grp * gs, len = std::min(gs, k - k0);
          std::vector<std::int8_t> part(static_cast<std::size_t>(len));
          unpack_int4_row(packed.data.data() + 3 * packed.data.extent(1) + k0 / 2, len,
                          part.data());
          for (Index c = 0; c < len; ++c)
            REQUIRE(part[static_cast<std::size_t>(c)] == codes(3, k0 + c));
        }
        const auto back = unpack_int4(packed.data.cview(), k, "w");
        for (Index i = 0; i < codes.size(); ++i) REQUIRE(back.data()[i] == codes.data()[i]);
      }
    }
  }

  TEST_CASE("int4: validated entry points") {
    auto w = random_int4(3, 10, 5);
    w(1, 4) = 8;
    test::check_throws_containing<ArgumentError>([&] { (void)pack_int4(w.cview(), "fc1.qweight"); },
                                                 "fc1.qweight");
    w(1, 4) = -9;
    CHECK_THROWS_AS((void)pack_int4(w.cview()), ArgumentError);
    Tensor<std::uint8_t, 2> packed({3, 5});
    CHECK_NOTHROW((void)unpack_int4(packed.cview(), 10));
    CHECK_NOTHROW((void)unpack_int4(packed.cview(), 9));
    CHECK_THROWS_AS((void)unpack_int4(packed.cview(), 11), ShapeError);
    CHECK_THROWS_AS((void)unpack_int4(packed.cview(), 8), ShapeError);
    const auto ok = random_int4(3, 10, 6);
    Tensor<float, 2> scales({3, 1}, 0.1f);
    CHECK_THROWS_AS((void)make_int4_weights(ok.cview(), scales.cview(), 3, "w"), ArgumentError);
    CHECK_THROWS_AS((void)make_int4_weights(ok.cview(), scales.cview(), 4, "w"), ShapeError);
    CHECK_NOTHROW((void)make_int4_weights(ok.cview(), scales.cview(), 0, "w"));
  }
}
