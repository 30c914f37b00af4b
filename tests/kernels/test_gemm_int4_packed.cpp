// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <tuple>
#include <vector>

#include "vitcompress/core/parallel_for.hpp"
#include "vitcompress/core/tensor.hpp"
#include "vitcompress/kernels/arch.hpp"
#include "vitcompress/kernels/gemm_int4_packed.hpp"

// Named, not anonymous: the test family builds as one unity TU.
namespace gemm_int4_packed_test {

using vitc::Index;
using vitc::Tensor;
using vitc::TensorView;
namespace kn = vitc::kernels;
namespace arch = vitc::kernels::arch;

#if XSIMD_WITH_AVX512BW
#define INT4_TEST_TAGS VITC_KERNEL_ARCH_TAGS, arch::Xsimd<xsimd::avx2>, arch::Xsimd<xsimd::sse4_2>
#else
#define INT4_TEST_TAGS VITC_KERNEL_ARCH_TAGS
#endif

enum class Fill { kRandom, kMin, kMax, kAlternate };

template <class T>
void fill(TensorView<T, 2> t, Fill how, int lo, int hi, std::mt19937& rng) {
  std::uniform_int_distribution<int> d(lo, hi);
  for (Index i = 0; i < t.extent(0); ++i)
    for (Index j = 0; j < t.extent(1); ++j) {
      int v = d(rng);
      if (how == Fill::kMin) v = lo;
      if (how == Fill::kMax) v = hi;
      if (how == Fill::kAlternate) v = ((i + j) % 2) ? lo : hi;
      t(i, j) = static_cast<T>(v);
    }
}

template <class AT>
void fill_a(TensorView<AT, 2> t, Fill how, std::mt19937& rng) {
  fill(t, how, std::is_signed_v<AT> ? -128 : 0, std::is_signed_v<AT> ? 127 : 255, rng);
}

template <class T>
bool same(const Tensor<T, 2>& x, const Tensor<T, 2>& y) {
  // memcmp only on non-empty data: an empty Tensor's data() may be null.
  return x.shape() == y.shape() &&
         (x.size() == 0 ||
          std::memcmp(x.data(), y.data(), static_cast<std::size_t>(x.size()) * sizeof(T)) == 0);
}

// The definitions from the unpacked weights.
template <class AT>
std::int64_t naive_partial(const Tensor<AT, 2>& a, std::int32_t za, const Tensor<std::int8_t, 2>& w,
                           Index i, Index j, Index k0, Index k1) {
  std::int64_t s = 0;
  for (Index k = k0; k < k1; ++k) s += (static_cast<std::int64_t>(a(i, k)) - za) * w(k, j);
  return s;
}

template <class AT>
Tensor<float, 2> naive_grouped(const Tensor<AT, 2>& a, std::int32_t za,
                               const Tensor<std::int8_t, 2>& w, const std::vector<float>& scales,
                               Index g, float a_scale, const std::vector<float>& bias) {
  const Index m = a.extent(0), k = a.extent(1), n = w.extent(1);
  const Index groups = std::max<Index>(1, (k + g - 1) / g);
  Tensor<float, 2> c({m, n});
  for (Index i = 0; i < m; ++i)
    for (Index j = 0; j < n; ++j) {
      float acc = 0.0f;
      for (Index q = 0; q < groups; ++q) {
        const auto p =
            static_cast<float>(naive_partial(a, za, w, i, j, q * g, std::min(k, q * g + g)));
        acc = std::fma(p, scales[static_cast<std::size_t>(q * n + j)], acc);
      }
      c(i, j) = std::fma(acc, a_scale, bias.empty() ? 0.0f : bias[static_cast<std::size_t>(j)]);
    }
  return c;
}

struct Dims {
  Index m, k, n;
};

std::vector<Dims> shapes() {
  std::vector<Dims> out;
  for (Index m : {0, 1, 2, 3, 4, 5, 9})
    for (Index k : {0, 1, 7, 8, 9, 64, 100})
      for (Index n : {0, 1, 16, 17, 50}) out.push_back({m, k, n});
  for (Dims d : {Dims{197, 192, 64}, Dims{197, 64, 197}, Dims{1, 4096, 33}, Dims{17, 4096, 48},
                 Dims{8, 768, 50}, Dims{3, 300, 130}, Dims{17, 17, 17}, Dims{197, 197, 17},
                 Dims{17, 197, 1}})
    out.push_back(d);
  return out;
}

// Integer group multipliers in [1, 255] (all 255 when `widest`).
std::vector<std::int32_t> random_multipliers(Index count, bool widest, std::mt19937& rng) {
  std::uniform_int_distribution<std::int32_t> d(1, 255);
  std::vector<std::int32_t> m(static_cast<std::size_t>(count));
  for (auto& v : m) v = widest ? 255 : d(rng);
  return m;
}

std::vector<float> random_scales(Index count, std::mt19937& rng) {
  std::uniform_real_distribution<float> d(1e-4f, 2e-2f);
  std::vector<float> s(static_cast<std::size_t>(count));
  for (auto& v : s) v = d(rng);
  return s;
}

TEST_SUITE("kernels") {
  TEST_CASE("PackedWeightsInt4: layout, sums, scales and validation") {
    std::mt19937 rng(20);
    const Index k = 21, n = 35, g = 8;
    Tensor<std::int8_t, 2> w({k, n});
    fill(w.view(), Fill::kRandom, -8, 7, rng);
    const auto scales = random_scales(3 * n, rng);
    const kn::PackedWeightsInt4 p(w.cview(), scales, g);
    CHECK(p.groups() == 3);
    CHECK(p.kblocks() == 3);
    CHECK(p.panels() == 3);
    CHECK(p.panel_bytes() == 3 * 64);
    CHECK(p.bytes() == 3 * 3 * 64);  // half the int8 layout's 3·6·64
    bool ok = true;
    for (Index kk = 0; kk < k; ++kk)
      for (Index j = 0; j < n; ++j) {
        ok &= p.at(kk, j) == w(kk, j);
        const std::uint8_t byte =
            p.data()[(j / 16) * p.panel_bytes() + (kk / 8) * 64 + (j % 16) * 4 + kk % 4];
        const int nibble = kk % 8 < 4 ? (byte & 0x0F) : (byte >> 4);
        ok &= nibble == w(kk, j) + 8;  // the documented formula
      }
    CHECK(ok);
    CHECK(p.data()[(n / 16) * p.panel_bytes() + 63] == 0x88);  // padding is w = 0
    for (Index q = 0; q < 3; ++q)
      for (Index j = 0; j < n; ++j) {
        std::int32_t s = 0;
        for (Index kk = q * g; kk < std::min(k, q * g + g); ++kk) s += w(kk, j);
        CHECK(p.group_column_sums(q)[j] == s);
        CHECK(p.scale(q, j) == scales[static_cast<std::size_t>(q * n + j)]);
        CHECK(p.padded_scales(q)[j] == p.scale(q, j));
      }
    const Tensor<std::int8_t, 2> wt = Tensor<std::int8_t, 2>::copy_of(w.cview().transposed());
    const auto from_out_in = kn::PackedWeightsInt4::from_out_in(wt.cview(), scales, g);
    CHECK(std::memcmp(from_out_in.data(), p.data(), static_cast<std::size_t>(p.bytes())) == 0);

    w(3, 4) = 8;
    CHECK_THROWS_WITH_AS(kn::PackedWeightsInt4(w.cview(), scales, g), doctest::Contains("w[3][4]"),
                         vitc::ArgumentError);
    w(3, 4) = -9;
    CHECK_THROWS_AS(kn::PackedWeightsInt4(w.cview(), scales, g), vitc::ArgumentError);
    w(3, 4) = 0;
    CHECK_THROWS_AS(kn::PackedWeightsInt4(w.cview(), scales, 12), vitc::ArgumentError);
    CHECK_THROWS_AS(kn::PackedWeightsInt4(w.cview(), scales, 0), vitc::ArgumentError);  // wants n
    std::vector<float> bad = scales;
    bad[5] = std::nanf("");
    CHECK_THROWS_AS(kn::PackedWeightsInt4(w.cview(), bad, g), vitc::ArgumentError);
    Tensor<std::int8_t, 2> deep({kn::PackedWeightsInt4::kMaxDepth + 1, 1});
    std::vector<float> one(1, 1.0f);
    CHECK_THROWS_AS(kn::PackedWeightsInt4(deep.cview(), one), vitc::ShapeError);
  }

  TEST_CASE("PackedWeightsInt4: repacks the quantizer's Int4Weights (kernels/int4_packing.hpp)") {
    std::mt19937 rng(24);
    const Index n = 21, k = 70;
    Tensor<std::int8_t, 2> codes({n, k});  // [out, in]
    fill(codes.view(), Fill::kRandom, -8, 7, rng);
    for (Index g : {0, 32}) {
      CAPTURE(g);
      const Index groups = g == 0 ? 1 : (k + g - 1) / g;
      Tensor<float, 2> scales({n, groups});
      std::uniform_real_distribution<float> d(-0.02f, 0.02f);
      for (auto& v : scales.span()) v = d(rng);
      const kn::Int4Weights w = kn::make_int4_weights(codes.cview(), scales.cview(), g, "w");
      const kn::PackedWeightsInt4 p = kn::PackedWeightsInt4::from_int4_weights(w);
      CHECK(p.depth() == k);
      CHECK(p.cols() == n);
      CHECK(p.group_size() == g);
      bool ok = true;
      for (Index j = 0; j < n; ++j) {
        for (Index kk = 0; kk < k; ++kk) ok &= p.at(kk, j) == codes(j, kk);
        for (Index q = 0; q < groups; ++q) ok &= p.scale(q, j) == scales(j, q);
      }
      CHECK(ok);
    }
    Tensor<float, 2> scales({n, 5});
    const kn::Int4Weights w6 = kn::make_int4_weights(codes.cview(), scales.cview(), 16, "w");
    CHECK_NOTHROW((void)kn::PackedWeightsInt4::from_int4_weights(w6));
    Tensor<float, 2> scales12({n, 6});
    const kn::Int4Weights w12 = kn::make_int4_weights(codes.cview(), scales12.cview(), 12, "w");
    CHECK_THROWS_WITH_AS((void)kn::PackedWeightsInt4::from_int4_weights(w12, "blocks.0.fc1"),
                         doctest::Contains("blocks.0.fc1"), vitc::ArgumentError);
  }

  TEST_CASE("gemm_int4: the scalar path equals the definitions from unpacked weights") {
    std::mt19937 rng(21);
    for (const Dims& d : shapes()) {
      if (d.m * d.k * d.n > 1'000'000) continue;
      CAPTURE(d.m);
      CAPTURE(d.k);
      CAPTURE(d.n);
      Tensor<std::int8_t, 2> a({d.m, d.k}), w({d.k, d.n});
      fill_a(a.view(), Fill::kRandom, rng);
      fill(w.view(), Fill::kRandom, -8, 7, rng);
      const kn::PackedWeightsInt4 pc(w.cview(), random_scales(d.n, rng));
      Tensor<std::int32_t, 2> want({d.m, d.n}), got({d.m, d.n});
      for (Index i = 0; i < d.m; ++i)
        for (Index j = 0; j < d.n; ++j)
          want(i, j) = static_cast<std::int32_t>(naive_partial(a, 7, w, i, j, 0, d.k));
      kn::gemm_int4<arch::Scalar>(a.cview(), 7, pc, got.view());
      CHECK(same(want, got));
      const Index g = 32;
      const auto sg = random_scales(std::max<Index>(1, (d.k + g - 1) / g) * d.n, rng);
      const kn::PackedWeightsInt4 pg(w.cview(), sg, g);
      std::vector<float> bias(static_cast<std::size_t>(d.n), 0.125f);
      Tensor<float, 2> fgot({d.m, d.n});
      kn::gemm_int4_grouped<arch::Scalar>(a.cview(), 7, 0.05f, pg, bias, fgot.view());
      CHECK(same(naive_grouped(a, 7, w, sg, g, 0.05f, bias), fgot));
      // Integer groups: Σ_g m·P_g.
      const Index groups = std::max<Index>(1, (d.k + g - 1) / g);
      const auto mg = random_multipliers(groups * d.n, false, rng);
      const auto pi = kn::PackedWeightsInt4::with_group_multipliers(w.cview(), mg, g);
      for (Index i = 0; i < d.m; ++i)
        for (Index j = 0; j < d.n; ++j) {
          std::int64_t sum = 0;
          for (Index q = 0; q < groups; ++q)
            sum += mg[static_cast<std::size_t>(q * d.n + j)] *
                   naive_partial(a, 7, w, i, j, q * g, std::min(d.k, q * g + g));
          want(i, j) = static_cast<std::int32_t>(sum);
        }
      kn::gemm_int4<arch::Scalar>(a.cview(), 7, pi, got.view());
      CHECK(same(want, got));
    }
  }

  TEST_CASE_TEMPLATE("gemm_int4: every path equals the scalar reference bit for bit", Tag,
                     INT4_TEST_TAGS) {
    if (!Tag::available()) {
      MESSAGE("path not available on this CPU: " << Tag::kName);
      return;
    }
    std::mt19937 rng(22);
    const Fill fills[] = {Fill::kRandom, Fill::kMin, Fill::kMax, Fill::kAlternate};
    int cases = 0;
    for (const Dims& d : shapes()) {
      CAPTURE(d.m);
      CAPTURE(d.k);
      CAPTURE(d.n);
      for (Fill fa : fills)
        for (Fill fw : fills) {
          if ((fa != Fill::kRandom || fw != Fill::kRandom) && d.m * d.k * d.n > 100'000) continue;
          CAPTURE(static_cast<int>(fa));
          CAPTURE(static_cast<int>(fw));
          Tensor<std::int8_t, 2> a({d.m, d.k}), w({d.k, d.n});
          Tensor<std::uint8_t, 2> au({d.m, d.k});
          fill_a(a.view(), fa, rng);
          fill_a(au.view(), fa, rng);
          fill(w.view(), fw, -8, 7, rng);
          const kn::PackedWeightsInt4 pc(w.cview(), random_scales(d.n, rng));
          Tensor<std::int32_t, 2> ref({d.m, d.n}), got({d.m, d.n});
          for (std::int32_t za : {0, -128, 127}) {
            kn::gemm_int4<arch::Scalar>(a.cview(), za, pc, ref.view());
            kn::gemm_int4<Tag>(a.cview(), za, pc, got.view());
            CHECK(same(ref, got));
          }
          for (std::int32_t za : {0, 255}) {
            kn::gemm_int4<arch::Scalar>(au.cview(), za, pc, ref.view());
            kn::gemm_int4<Tag>(au.cview(), za, pc, got.view());
            CHECK(same(ref, got));
          }
          for (Index g : {8, 32, 64, 128}) {
            const Index groups = std::max<Index>(1, (d.k + g - 1) / g);
            const kn::PackedWeightsInt4 pg(w.cview(), random_scales(groups * d.n, rng), g);
            std::vector<float> bias(static_cast<std::size_t>(d.n));
            for (auto& b : bias) b = static_cast<float>(rng() % 1000) * 1e-3f - 0.5f;
            Tensor<float, 2> fref({d.m, d.n}), fgot({d.m, d.n});
            kn::gemm_int4_grouped<arch::Scalar>(au.cview(), 3, 0.02f, pg, bias, fref.view());
            kn::gemm_int4_grouped<Tag>(au.cview(), 3, 0.02f, pg, bias, fgot.view());
            CHECK(same(fref, fgot));
            kn::gemm_int4_grouped<arch::Scalar>(a.cview(), -5, 1.5f, pg, {}, fref.view());
            kn::gemm_int4_grouped<Tag>(a.cview(), -5, 1.5f, pg, {}, fgot.view());
            CHECK(same(fref, fgot));
            // Integer groups (multipliers all 255 with extreme operands: the int32 bound).
            const auto pi = kn::PackedWeightsInt4::with_group_multipliers(
                w.cview(), random_multipliers(groups * d.n, fw != Fill::kRandom, rng), g);
            kn::gemm_int4<arch::Scalar>(au.cview(), 255, pi, ref.view());
            kn::gemm_int4<Tag>(au.cview(), 255, pi, got.view());
            CHECK(same(ref, got));
            kn::gemm_int4<arch::Scalar>(a.cview(), -128, pi, ref.view());
            kn::gemm_int4<Tag>(a.cview(), -128, pi, got.view());
            CHECK(same(ref, got));
          }
          ++cases;
        }
    }
    CHECK(cases > 300);
  }

  TEST_CASE_TEMPLATE("gemm_int4: output pipelines, strided A and threads", Tag, INT4_TEST_TAGS) {
    if (!Tag::available()) {
      MESSAGE("path not available on this CPU: " << Tag::kName);
      return;
    }
    std::mt19937 rng(23);
    const Index m = 77, k = 72, n = 40;  // M >= 64: two threads split rows on the VNNI path
    std::vector<std::uint8_t> abuf(static_cast<std::size_t>(1 + m * (k + 5)));
    for (auto& v : abuf) v = static_cast<std::uint8_t>(rng());
    const TensorView<const std::uint8_t, 2> a(abuf.data() + 1, {m, k}, {k + 5, 1});
    Tensor<std::int8_t, 2> w({k, n});
    fill(w.view(), Fill::kRandom, -8, 7, rng);
    const auto scales = random_scales(n, rng);
    const kn::PackedWeightsInt4 pc(w.cview(), scales);
    std::vector<kn::FixedPointMultiplier> mult;
    for (float s : scales) mult.push_back(kn::fixed_point_from_scale(s * 0.05));
    using P = std::tuple<kn::OutputRequantizePerChannel, kn::OutputAddZeroPoint,
                         kn::OutputSaturatingCast<std::int8_t>>;
    const P pipeline{{mult}, {-3}, {}};
    Tensor<std::int8_t, 2> ref({m, n}), got({m, n});
    kn::gemm_int4<arch::Scalar>(a, 100, pc, pipeline, ref.view());
    kn::gemm_int4<Tag>(a, 100, pc, pipeline, got.view());
    CHECK(same(ref, got));
    vitc::ThreadPool pool(2);
    kn::gemm_int4<Tag>(a, 100, pc, pipeline, got.view(), pool);
    CHECK(same(ref, got));
    using F = std::tuple<kn::OutputDequantizePerChannel>;
    Tensor<float, 2> fref({m, n}), fgot({m, n});
    kn::gemm_int4<arch::Scalar>(a, 100, pc, F{{scales}}, fref.view());
    kn::gemm_int4<Tag>(a, 100, pc, F{{scales}}, fgot.view(), pool);
    CHECK(same(fref, fgot));
    const kn::PackedWeightsInt4 pg(w.cview(), random_scales(3 * n, rng), 32);
    kn::gemm_int4_grouped<arch::Scalar>(a, 100, 0.5f, pg, {}, fref.view());
    kn::gemm_int4_grouped<Tag>(a, 100, 0.5f, pg, {}, fgot.view(), pool);
    CHECK(same(fref, fgot));
    // Integer groups through the requantizing pipeline, on two threads.
    const auto pi = kn::PackedWeightsInt4::with_group_multipliers(
        w.cview(), random_multipliers(3 * n, false, rng), 32);
    std::vector<kn::FixedPointMultiplier> small;
    for (float sc : scales) small.push_back(kn::fixed_point_from_scale(sc * 0.002));
    const P ipipe{{small}, {-3}, {}};
    kn::gemm_int4<arch::Scalar>(a, 100, pi, ipipe, ref.view());
    kn::gemm_int4<Tag>(a, 100, pi, ipipe, got.view(), pool);
    CHECK(same(ref, got));
  }

  TEST_CASE("gemm_int4: argument errors") {
    Tensor<std::int8_t, 2> a({2, 16}), w({16, 5});
    const kn::PackedWeightsInt4 pc(w.cview(), std::vector<float>(5, 1.0f));
    const kn::PackedWeightsInt4 pg(w.cview(), std::vector<float>(10, 1.0f), 8);
    Tensor<std::int32_t, 2> c({2, 5});
    Tensor<float, 2> f({2, 5});
    CHECK_THROWS_WITH_AS(kn::gemm_int4(a.cview(), 0, pg, c.view()),
                         doctest::Contains("gemm_int4_grouped"), vitc::ArgumentError);
    CHECK_THROWS_AS(kn::gemm_int4_grouped(a.cview(), 0, 1.0f, pc, {}, f.view()),
                    vitc::ArgumentError);
    // Integer groups: gemm_int4 only; multipliers in [1, 255], one per group and column, and no
    // depth whose sum could overflow int32.
    const auto pi = kn::PackedWeightsInt4::with_group_multipliers(
        w.cview(), std::vector<std::int32_t>(10, 3), 8);
    CHECK_NOTHROW(kn::gemm_int4(a.cview(), 0, pi, c.view()));
    CHECK_THROWS_WITH_AS(kn::gemm_int4_grouped(a.cview(), 0, 1.0f, pi, {}, f.view()),
                         doctest::Contains("integer group multipliers"), vitc::ArgumentError);
    CHECK_THROWS_WITH_AS((void)kn::PackedWeightsInt4::with_group_multipliers(
                             w.cview(), std::vector<std::int32_t>(10, 256), 8),
                         doctest::Contains("256"), vitc::ArgumentError);
    CHECK_THROWS_AS((void)kn::PackedWeightsInt4::with_group_multipliers(
                        w.cview(), std::vector<std::int32_t>(9, 1), 8),
                    vitc::ArgumentError);
    CHECK_THROWS_AS((void)kn::PackedWeightsInt4::with_group_multipliers(
                        w.cview(), std::vector<std::int32_t>(5, 1), 0),
                    vitc::ArgumentError);
    Tensor<std::int8_t, 2> deep({4200, 1});
    CHECK_THROWS_WITH_AS((void)kn::PackedWeightsInt4::with_group_multipliers(
                             deep.cview(), std::vector<std::int32_t>(132, 255), 32),
                         doctest::Contains("overflow"), vitc::ArgumentError);
    CHECK_NOTHROW((void)kn::PackedWeightsInt4::with_group_multipliers(
        deep.cview(), std::vector<std::int32_t>(132, 250), 32));
    std::vector<float> short_bias(3);
    CHECK_THROWS_AS(kn::gemm_int4_grouped(a.cview(), 0, 1.0f, pg, short_bias, f.view()),
                    vitc::ArgumentError);
    Tensor<std::int8_t, 2> a_bad({2, 15});
    CHECK_THROWS_AS(kn::gemm_int4(a_bad.cview(), 0, pc, c.view()), vitc::ShapeError);
    Tensor<std::int32_t, 2> c_bad({3, 5});
    CHECK_THROWS_AS(kn::gemm_int4(a.cview(), 0, pc, c_bad.view()), vitc::ShapeError);
    CHECK_THROWS_AS(kn::gemm_int4(a.cview(), 200, pc, c.view()), vitc::ArgumentError);
  }
}

}  // namespace gemm_int4_packed_test
