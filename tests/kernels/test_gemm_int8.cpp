// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include <cstdint>
#include <cstdlib>
#include <random>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "vitcompress/core/parallel_for.hpp"
#include "vitcompress/core/tensor.hpp"
#include "vitcompress/kernels/arch.hpp"
#include "vitcompress/kernels/gemm_int8.hpp"

// Named, not anonymous: the test family builds as one unity TU.
namespace gemm_int8_test {

using vitc::Index;
using vitc::Tensor;
using vitc::TensorView;
namespace kn = vitc::kernels;
namespace arch = vitc::kernels::arch;

// Every tag compiled in, plus narrower xsimd archs when the flags give AVX-512 (distinct types).
#if XSIMD_WITH_AVX512BW
#define GEMM_TEST_TAGS VITC_KERNEL_ARCH_TAGS, arch::Xsimd<xsimd::avx2>, arch::Xsimd<xsimd::sse4_2>
#else
#define GEMM_TEST_TAGS VITC_KERNEL_ARCH_TAGS
#endif

enum class Fill { kRandom, kMin, kMax, kAlternate, kZero };

template <class T>
void fill(TensorView<T, 2> t, Fill how, std::mt19937& rng) {
  constexpr int lo = std::is_signed_v<T> ? -128 : 0, hi = std::is_signed_v<T> ? 127 : 255;
  std::uniform_int_distribution<int> d(lo, hi);
  for (Index i = 0; i < t.extent(0); ++i)
    for (Index j = 0; j < t.extent(1); ++j) {
      int v = 0;
      switch (how) {
        case Fill::kRandom:
          v = d(rng);
          break;
        case Fill::kMin:
          v = lo;
          break;
        case Fill::kMax:
          v = hi;
          break;
        case Fill::kAlternate:
          v = ((i + j) % 2) ? lo : hi;
          break;
        case Fill::kZero:
          v = 0;
          break;
      }
      t(i, j) = static_cast<T>(v);
    }
}

// The definition, from the unpacked operands: int64 sums, then the pipeline per element.
template <class AT, class Pipeline, class OutT>
void naive_gemm(TensorView<const AT, 2> a, std::int32_t za, TensorView<const std::int8_t, 2> b,
                const Pipeline& pipeline, TensorView<OutT, 2> c) {
  for (Index i = 0; i < a.extent(0); ++i)
    for (Index j = 0; j < b.extent(1); ++j) {
      std::int64_t acc = 0;
      for (Index k = 0; k < a.extent(1); ++k)
        acc += (static_cast<std::int64_t>(a(i, k)) - za) * b(k, j);
      REQUIRE(acc >= INT32_MIN);
      REQUIRE(acc <= INT32_MAX);
      c(i, j) = kn::eval_pipeline(pipeline, static_cast<std::int32_t>(acc), j);
    }
}

template <class T>
bool same(const Tensor<T, 2>& x, const Tensor<T, 2>& y, Index* where = nullptr) {
  if (x.shape() != y.shape()) return false;
  for (Index i = 0; i < x.size(); ++i) {
    const bool eq = std::is_floating_point_v<T>
                        ? std::memcmp(&x.data()[i], &y.data()[i], sizeof(T)) == 0
                        : x.data()[i] == y.data()[i];
    if (!eq) {
      if (where) *where = i;
      return false;
    }
  }
  return true;
}

struct Dims {
  Index m, k, n;
};

// Small shapes in every combination (tails below, at and above the 16-column panel, the 4-deep
// k-group and the 8-row VNNI block; last panels of 1, 8, 9 and 15 columns, which AVX2 runs as
// 1, 2, 3 and 4 groups of 4 columns) plus ViT-sized ones.
std::vector<Dims> test_shapes() {
  std::vector<Dims> out;
  for (Index m : {0, 1, 2, 3, 4, 8, 9, 17})
    for (Index k : {0, 1, 3, 4, 5, 17, 64})
      for (Index n : {0, 1, 15, 16, 24, 25, 49}) out.push_back({m, k, n});
  for (Dims d : {Dims{197, 192, 64}, Dims{197, 64, 197}, Dims{197, 197, 64}, Dims{1, 4096, 33},
                 Dims{17, 4096, 48}, Dims{9, 771, 197}, Dims{8, 768, 50}, Dims{5, 1536, 129},
                 Dims{3, 300, 400}})
    out.push_back(d);
  return out;
}

template <class Tag, class AT, class Pipeline, class OutT>
void check_against_scalar(const Tensor<AT, 2>& a, std::int32_t za, const Tensor<std::int8_t, 2>& b,
                          const Pipeline& pipeline) {
  const kn::PackedWeightsInt8 packed(b.cview());
  Tensor<OutT, 2> ref({a.extent(0), b.extent(1)}), got({a.extent(0), b.extent(1)});
  kn::gemm_int8<arch::Scalar>(a.cview(), za, packed, pipeline, ref.view());
  kn::gemm_int8<Tag>(a.cview(), za, packed, pipeline, got.view());
  Index where = -1;
  const bool ok = same(ref, got, &where);
  if (!ok) {
    const Index n = b.extent(1);
    CAPTURE(where / n);
    CAPTURE(where % n);
    CAPTURE(static_cast<double>(ref.data()[where]));
    CAPTURE(static_cast<double>(got.data()[where]));
    // Which other paths agree with the reference (ruy prints this too).
    std::string agree;
    arch::dispatch(arch::best_arch(), [&](auto best) {
      Tensor<OutT, 2> other({a.extent(0), n});
      kn::gemm_int8<decltype(best)>(a.cview(), za, packed, pipeline, other.view());
      agree = std::string(decltype(best)::kName) + (same(ref, other) ? " agrees" : " disagrees");
    });
    CAPTURE(agree);
    CHECK(ok);
  }
}

using Int8Out = std::tuple<kn::OutputBiasAdd, kn::OutputRequantize, kn::OutputAddZeroPoint,
                           kn::OutputClamp, kn::OutputSaturatingCast<std::int8_t>>;

TEST_SUITE("kernels") {
  TEST_CASE("gemm_int8: the scalar path equals the definition computed from unpacked B") {
    std::mt19937 rng(1);
    for (const Dims& d : test_shapes()) {
      if (d.m * d.k * d.n > 2'000'000) continue;
      CAPTURE(d.m);
      CAPTURE(d.k);
      CAPTURE(d.n);
      Tensor<std::int8_t, 2> a({d.m, d.k}), b({d.k, d.n});
      Tensor<std::uint8_t, 2> au({d.m, d.k});
      fill(a.view(), Fill::kRandom, rng);
      fill(au.view(), Fill::kRandom, rng);
      fill(b.view(), Fill::kRandom, rng);
      const kn::PackedWeightsInt8 packed(b.cview());
      Tensor<std::int32_t, 2> want({d.m, d.n}), got({d.m, d.n});
      naive_gemm(a.cview(), -3, b.cview(), kn::RawInt32{}, want.view());
      kn::gemm_int8<arch::Scalar>(a.cview(), -3, packed, got.view());
      CHECK(same(want, got));
      naive_gemm(au.cview(), 131, b.cview(), kn::RawInt32{}, want.view());
      kn::gemm_int8<arch::Scalar>(au.cview(), 131, packed, got.view());
      CHECK(same(want, got));
    }
  }

  TEST_CASE_TEMPLATE("gemm_int8: every path equals the scalar reference bit for bit", Tag,
                     GEMM_TEST_TAGS) {
    if (!Tag::available()) {
      MESSAGE("path not available on this CPU: " << Tag::kName);
      return;
    }
    std::mt19937 rng(2);
    const Fill fills[] = {Fill::kRandom, Fill::kMin, Fill::kMax, Fill::kAlternate};
    int cases = 0;
    for (const Dims& d : test_shapes()) {
      CAPTURE(d.m);
      CAPTURE(d.k);
      CAPTURE(d.n);
      for (Fill fa : fills)
        for (Fill fb : fills) {
          // Extreme operand combinations on the small shapes, random ones everywhere.
          if ((fa != Fill::kRandom || fb != Fill::kRandom) && d.m * d.k * d.n > 100'000) continue;
          CAPTURE(static_cast<int>(fa));
          CAPTURE(static_cast<int>(fb));
          Tensor<std::int8_t, 2> a({d.m, d.k}), b({d.k, d.n});
          Tensor<std::uint8_t, 2> au({d.m, d.k});
          fill(a.view(), fa, rng);
          fill(au.view(), fa, rng);
          fill(b.view(), fb, rng);
          for (std::int32_t za : {0, -128, 127, 5})
            check_against_scalar<Tag, std::int8_t, kn::RawInt32, std::int32_t>(a, za, b, {});
          for (std::int32_t za : {0, 255, 128})
            check_against_scalar<Tag, std::uint8_t, kn::RawInt32, std::int32_t>(au, za, b, {});
          ++cases;
        }
    }
    CHECK(cases > 300);
  }

  // vpmaddubsw adds two u8×s8 products into a saturating int16: 255·(−128)·2 = −65280 would clamp
  // to −32768 in a naive AVX2 kernel, and vpsignb(−128) wraps in the sign trick. These inputs
  // hit exactly those cases; every path must still give the exact sums.
  TEST_CASE_TEMPLATE("gemm_int8: saturation hazards of vpmaddubsw give exact results", Tag,
                     GEMM_TEST_TAGS) {
    if (!Tag::available()) {
      MESSAGE("path not available on this CPU: " << Tag::kName);
      return;
    }
    const Index m = 9, k = 260, n = 40;
    for (int bval : {-128, 127, -127}) {
      CAPTURE(bval);
      Tensor<std::int8_t, 2> b({k, n}, static_cast<std::int8_t>(bval));
      Tensor<std::uint8_t, 2> au({m, k}, 255);
      Tensor<std::int8_t, 2> an({m, k}, -128), ap({m, k}, 127);
      for (auto [za_u, za_s] : {std::pair{0, 0}, std::pair{255, 127}, std::pair{128, -128}}) {
        const kn::PackedWeightsInt8 packed(b.cview());
        Tensor<std::int32_t, 2> want({m, n}), got({m, n});
        naive_gemm(au.cview(), za_u, b.cview(), kn::RawInt32{}, want.view());
        kn::gemm_int8<Tag>(au.cview(), za_u, packed, got.view());
        CHECK(same(want, got));
        naive_gemm(an.cview(), za_s, b.cview(), kn::RawInt32{}, want.view());
        kn::gemm_int8<Tag>(an.cview(), za_s, packed, got.view());
        CHECK(same(want, got));
        naive_gemm(ap.cview(), za_s, b.cview(), kn::RawInt32{}, want.view());
        kn::gemm_int8<Tag>(ap.cview(), za_s, packed, got.view());
        CHECK(same(want, got));
      }
    }
    // One panel with a single −128 among [−127, 127] weights: only that panel takes the
    // widening kernel on AVX2; the result stays exact everywhere.
    std::mt19937 rng(3);
    Tensor<std::int8_t, 2> b({k, n});
    Tensor<std::int8_t, 2> a({m, k});
    std::uniform_int_distribution<int> w(-127, 127);
    for (auto& v : b.span()) v = static_cast<std::int8_t>(w(rng));
    b(17, 20) = -128;
    fill(a.view(), Fill::kRandom, rng);
    for (Index i = 0; i < m; ++i) a(i, 17) = -128;
    const kn::PackedWeightsInt8 packed(b.cview());
    CHECK_FALSE(packed.panel_has_min(0));
    CHECK(packed.panel_has_min(1));
    CHECK_FALSE(packed.panel_has_min(2));
    Tensor<std::int32_t, 2> want({m, n}), got({m, n});
    naive_gemm(a.cview(), 0, b.cview(), kn::RawInt32{}, want.view());
    kn::gemm_int8<Tag>(a.cview(), 0, packed, got.view());
    CHECK(same(want, got));
  }

  // Weights with |b| <= 64 take vpmaddubsw without widening on AVX2 (2·255·64 = 32640 fits an
  // int16 pair sum); at 65 one pair of 255·65 would saturate, so those must take another kernel.
  // Both magnitudes, at the extremes of both operands, on every path.
  TEST_CASE_TEMPLATE("gemm_int8: 7-bit weights at the vpmaddubsw saturation edge are exact", Tag,
                     GEMM_TEST_TAGS) {
    if (!Tag::available()) {
      MESSAGE("path not available on this CPU: " << Tag::kName);
      return;
    }
    std::mt19937 rng(7);
    int cases = 0;
    for (const Dims d : {Dims{2, 4, 16}, Dims{3, 5, 25}, Dims{8, 64, 48}, Dims{9, 771, 49},
                         Dims{17, 4096, 33}, Dims{197, 192, 64}, Dims{1, 260, 40}}) {
      CAPTURE(d.m);
      CAPTURE(d.k);
      CAPTURE(d.n);
      const std::vector<std::int32_t> bias(static_cast<std::size_t>(d.n), 1000);
      for (int mag : {64, 65}) {
        CAPTURE(mag);
        for (int pattern = 0; pattern < 4; ++pattern) {
          CAPTURE(pattern);
          std::uniform_int_distribution<int> w(-mag, mag);
          Tensor<std::int8_t, 2> b({d.k, d.n});
          for (Index i = 0; i < d.k; ++i)
            for (Index j = 0; j < d.n; ++j) {
              const int v = pattern == 0   ? w(rng)
                            : pattern == 1 ? mag
                            : pattern == 2 ? -mag
                                           : ((i / 2 + j) % 2 ? mag : -mag);
              b(i, j) = static_cast<std::int8_t>(v);
            }
          b(0, 0) =
              static_cast<std::int8_t>(pattern == 2 ? -mag : mag);  // the magnitude is reached
          CHECK(kn::PackedWeightsInt8(b.cview()).max_magnitude() == mag);
          Tensor<std::uint8_t, 2> au({d.m, d.k}, 255), ar({d.m, d.k});
          Tensor<std::int8_t, 2> ap({d.m, d.k}, 127), an({d.m, d.k}, -128), as({d.m, d.k});
          fill(ar.view(), Fill::kRandom, rng);
          fill(as.view(), Fill::kRandom, rng);
          for (std::int32_t za : {0, 255, 77}) {
            check_against_scalar<Tag, std::uint8_t, kn::RawInt32, std::int32_t>(au, za, b, {});
            check_against_scalar<Tag, std::uint8_t, Int8Out, std::int8_t>(
                ar, za, b,
                Int8Out{{bias}, {kn::fixed_point_from_scale(0.003)}, {-3}, {-100, 90}, {}});
          }
          for (std::int32_t za : {0, -128, 127}) {
            check_against_scalar<Tag, std::int8_t, kn::RawInt32, std::int32_t>(ap, za, b, {});
            check_against_scalar<Tag, std::int8_t, kn::RawInt32, std::int32_t>(an, za, b, {});
            check_against_scalar<Tag, std::int8_t, kn::RawInt32, std::int32_t>(as, za, b, {});
          }
          ++cases;
        }
      }
    }
    CHECK(cases == 56);
  }

  TEST_CASE_TEMPLATE("gemm_int8: every output pipeline matches the reference", Tag,
                     GEMM_TEST_TAGS) {
    if (!Tag::available()) {
      MESSAGE("path not available on this CPU: " << Tag::kName);
      return;
    }
    std::mt19937 rng(4);
    for (Dims d : {Dims{17, 96, 49}, Dims{197, 64, 197}, Dims{1, 768, 33}, Dims{4, 5, 16}}) {
      CAPTURE(d.m);
      CAPTURE(d.k);
      CAPTURE(d.n);
      Tensor<std::uint8_t, 2> a({d.m, d.k});
      Tensor<std::int8_t, 2> b({d.k, d.n});
      fill(a.view(), Fill::kRandom, rng);
      fill(b.view(), Fill::kRandom, rng);
      std::vector<std::int32_t> bias(static_cast<std::size_t>(d.n));
      std::vector<kn::FixedPointMultiplier> mults(static_cast<std::size_t>(d.n));
      std::vector<float> scales(static_cast<std::size_t>(d.n));
      std::uniform_int_distribution<std::int32_t> bd(-200000, 200000);
      std::uniform_real_distribution<double> sd(1e-5, 3e-3);
      for (std::size_t j = 0; j < bias.size(); ++j) {
        bias[j] = bd(rng);
        mults[j] = kn::fixed_point_from_scale(sd(rng));
        scales[j] = static_cast<float>(sd(rng));
      }
      bias.at(0) = INT32_MAX;  // wraps on purpose: stages define int32 wrapping
      const auto fp = kn::fixed_point_from_scale(0.00037);
      check_against_scalar<Tag, std::uint8_t, kn::RawInt32, std::int32_t>(a, 77, b, {});
      check_against_scalar<Tag, std::uint8_t, Int8Out, std::int8_t>(
          a, 77, b, Int8Out{{bias}, {fp}, {-5}, {-100, 90}, {}});
      using U8 = std::tuple<kn::OutputRequantizePerChannel, kn::OutputAddZeroPoint,
                            kn::OutputSaturatingCast<std::uint8_t>>;
      check_against_scalar<Tag, std::uint8_t, U8, std::uint8_t>(a, 77, b, U8{{mults}, {128}, {}});
      using I16 = std::tuple<kn::OutputBiasAdd, kn::OutputRequantize,
                             kn::OutputSaturatingCast<std::int16_t>>;
      check_against_scalar<Tag, std::uint8_t, I16, std::int16_t>(
          a, 77, b, I16{{bias}, {kn::fixed_point_from_scale(0.3)}, {}});
      using LeftShift = std::tuple<kn::OutputRequantize, kn::OutputSaturatingCast<std::int8_t>>;
      check_against_scalar<Tag, std::uint8_t, LeftShift, std::int8_t>(
          a, 77, b, LeftShift{{kn::fixed_point_from_scale(37.5)}, {}});
      using F = std::tuple<kn::OutputBiasAdd, kn::OutputDequantize>;
      check_against_scalar<Tag, std::uint8_t, F, float>(a, 77, b, F{{bias}, {1.5e-4f}});
      using FC = std::tuple<kn::OutputDequantizePerChannel>;
      check_against_scalar<Tag, std::uint8_t, FC, float>(a, 77, b, FC{{scales}});
      // Arbitrary multipliers and shifts (INT32_MIN included, left shifts that saturate, shift 31):
      // the SIMD fixed-point code must match the scalar formula on every lane.
      std::vector<kn::FixedPointMultiplier> wild(static_cast<std::size_t>(d.n));
      std::uniform_int_distribution<std::int32_t> any_m(INT32_MIN, INT32_MAX);
      std::uniform_int_distribution<std::int32_t> any_s(-31, 31);
      for (std::size_t j = 0; j < wild.size(); ++j)
        wild[j] = {j % 5 == 0 ? INT32_MIN : any_m(rng), j % 7 == 0 ? 31 : any_s(rng)};
      using Wild = std::tuple<kn::OutputBiasAdd, kn::OutputRequantizePerChannel>;
      check_against_scalar<Tag, std::uint8_t, Wild, std::int32_t>(a, 77, b, Wild{{bias}, {wild}});
      using WildT = std::tuple<kn::OutputRequantize, kn::OutputSaturatingCast<std::uint8_t>>;
      for (kn::FixedPointMultiplier m :
           {kn::FixedPointMultiplier{INT32_MIN, -31}, kn::FixedPointMultiplier{INT32_MAX, 31},
            kn::FixedPointMultiplier{-12345678, 3}})
        check_against_scalar<Tag, std::uint8_t, WildT, std::uint8_t>(a, 77, b, WildT{{m}, {}});
      using Clamp = std::tuple<kn::OutputClamp>;
      check_against_scalar<Tag, std::uint8_t, Clamp, std::int32_t>(a, 77, b, Clamp{{-1000, 0}});
    }
  }

  TEST_CASE("gemm_int8: the int8 pipeline saturates both ways and matches its formula") {
    std::mt19937 rng(5);
    const Index m = 33, k = 200, n = 40;
    Tensor<std::int8_t, 2> a({m, k}), b({k, n});
    fill(a.view(), Fill::kRandom, rng);
    fill(b.view(), Fill::kRandom, rng);
    const kn::PackedWeightsInt8 packed(b.cview());
    std::vector<std::int32_t> bias(static_cast<std::size_t>(n), 0);
    const Int8Out pipeline{{bias}, {kn::fixed_point_from_scale(0.01)}, {3}, {}, {}};
    Tensor<std::int8_t, 2> want({m, n}), got({m, n});
    naive_gemm(a.cview(), 0, b.cview(), pipeline, want.view());
    kn::gemm_int8(a.cview(), 0, packed, pipeline, got.view());
    CHECK(same(want, got));
    int lo = 0, hi = 0;
    for (std::int8_t v : got.span()) {
      lo += v == -128;
      hi += v == 127;
    }
    CHECK(lo > 0);  // the test exercises the saturation it claims to
    CHECK(hi > 0);
    // Stage formulas, one value each.
    CHECK(kn::OutputSaturatingCast<std::uint8_t>{}(-7, 0) == 0);
    CHECK(kn::OutputSaturatingCast<std::uint8_t>{}(300, 0) == 255);
    CHECK(kn::OutputSaturatingCast<std::int8_t>{}(-129, 0) == -128);
    CHECK(kn::OutputSaturatingCast<std::int16_t>{}(40000, 0) == 32767);
    CHECK(kn::OutputClamp{-3, 4}(9, 0) == 4);
    CHECK(kn::OutputAddZeroPoint{1}(INT32_MAX, 0) == INT32_MIN);  // wraps, as documented
    CHECK(kn::OutputDequantize{0.5f}(3, 0) == 1.5f);
    static_assert(std::is_same_v<kn::pipeline_output_t<Int8Out>, std::int8_t>);
    static_assert(std::is_same_v<kn::pipeline_output_t<kn::RawInt32>, std::int32_t>);
    static_assert(std::is_same_v<kn::pipeline_output_t<std::tuple<kn::OutputDequantize>>, float>);
  }

  TEST_CASE_TEMPLATE("gemm_int8: strided, transposed and unaligned operands", Tag, GEMM_TEST_TAGS) {
    if (!Tag::available()) {
      MESSAGE("path not available on this CPU: " << Tag::kName);
      return;
    }
    std::mt19937 rng(6);
    const Index m = 19, k = 37, n = 35;
    // A inside a larger buffer, starting one byte in (unaligned), row stride k + 3.
    std::vector<std::int8_t> abuf(static_cast<std::size_t>(1 + m * (k + 3)));
    for (auto& v : abuf) v = static_cast<std::int8_t>(rng());
    const TensorView<const std::int8_t, 2> a_strided(abuf.data() + 1, {m, k}, {k + 3, 1});
    // The same values through a transposed view of a k×m matrix (column stride != 1).
    Tensor<std::int8_t, 2> at({k, m});
    for (Index i = 0; i < m; ++i)
      for (Index j = 0; j < k; ++j) at(j, i) = a_strided(i, j);
    const TensorView<const std::int8_t, 2> a_transposed = at.cview().transposed();
    const Tensor<std::int8_t, 2> a_plain = Tensor<std::int8_t, 2>::copy_of(a_strided);
    Tensor<std::int8_t, 2> b({k, n});
    fill(b.view(), Fill::kRandom, rng);
    const kn::PackedWeightsInt8 packed(b.cview());
    Tensor<std::int32_t, 2> want({m, n});
    naive_gemm(a_plain.cview(), 9, b.cview(), kn::RawInt32{}, want.view());
    // C inside a larger buffer, unaligned by one element, row stride n + 5.
    std::vector<std::int32_t> cbuf(static_cast<std::size_t>(1 + m * (n + 5)), 12345);
    const TensorView<std::int32_t, 2> c(cbuf.data() + 1, {m, n}, {n + 5, 1});
    for (const auto& a : {a_strided, a_transposed}) {
      std::fill(cbuf.begin(), cbuf.end(), 12345);
      kn::gemm_int8<Tag>(a, 9, packed, c);
      bool ok = true;
      for (Index i = 0; i < m; ++i)
        for (Index j = 0; j < n; ++j) ok &= c(i, j) == want(i, j);
      CHECK(ok);
      // Nothing outside C was written.
      CHECK(cbuf[0] == 12345);
      for (Index i = 0; i < m; ++i)
        for (Index j = n; j < n + 5 && 1 + i * (n + 5) + j < static_cast<Index>(cbuf.size()); ++j)
          CHECK(cbuf[static_cast<std::size_t>(1 + i * (n + 5) + j)] == 12345);
    }
  }

  TEST_CASE_TEMPLATE("gemm_int8: attention products with activations on both sides", Tag,
                     GEMM_TEST_TAGS) {
    if (!Tag::available()) {
      MESSAGE("path not available on this CPU: " << Tag::kName);
      return;
    }
    std::mt19937 rng(7);
    const Index tokens = 197, head = 64;
    Tensor<std::int8_t, 2> q({tokens, head}), key({tokens, head}), v({tokens, head});
    Tensor<std::uint8_t, 2> p({tokens, tokens});
    fill(q.view(), Fill::kRandom, rng);
    fill(key.view(), Fill::kRandom, rng);
    fill(v.view(), Fill::kRandom, rng);
    fill(p.view(), Fill::kRandom, rng);
    // Q·Kᵀ: B = Kᵀ, packed from the [tokens, head] key matrix as an [out, in] matrix.
    const auto kt = kn::PackedWeightsInt8::from_out_in(key.cview());
    Tensor<std::int32_t, 2> s_want({tokens, tokens}), s_got({tokens, tokens});
    naive_gemm(q.cview(), 0, key.cview().transposed(), kn::RawInt32{}, s_want.view());
    kn::gemm_int8<Tag>(q.cview(), 0, kt, s_got.view());
    CHECK(same(s_want, s_got));
    // P·V: B = V directly; P is uint8 probabilities.
    const kn::PackedWeightsInt8 vp(v.cview());
    Tensor<std::int32_t, 2> o_want({tokens, head}), o_got({tokens, head});
    naive_gemm(p.cview(), 0, v.cview(), kn::RawInt32{}, o_want.view());
    kn::gemm_int8<Tag>(p.cview(), 0, vp, o_got.view());
    CHECK(same(o_want, o_got));
  }

  TEST_CASE("gemm_int8: results do not depend on the number of threads") {
    std::mt19937 rng(8);
    for (Dims d : {Dims{197, 192, 197}, Dims{131, 64, 40}, Dims{1, 768, 64}, Dims{8, 100, 300},
                   Dims{5, 20, 7}}) {
      CAPTURE(d.m);
      Tensor<std::uint8_t, 2> a({d.m, d.k});
      Tensor<std::int8_t, 2> b({d.k, d.n});
      fill(a.view(), Fill::kRandom, rng);
      fill(b.view(), Fill::kRandom, rng);
      const kn::PackedWeightsInt8 packed(b.cview());
      const std::tuple<kn::OutputDequantize> deq{{0.001f}};
      Tensor<float, 2> one({d.m, d.n}), two({d.m, d.n}), three({d.m, d.n});
      kn::gemm_int8(a.cview(), 100, packed, deq, one.view());
      vitc::ThreadPool pool2(2), pool3(3);
      kn::gemm_int8(a.cview(), 100, packed, deq, two.view(), pool2);
      kn::gemm_int8(a.cview(), 100, packed, deq, three.view(), pool3);
      CHECK(same(one, two));
      CHECK(same(one, three));
      // Signed A and an int8 output stage: rows split across threads (M >= 64) pack their own A.
      Tensor<std::int8_t, 2> sa({d.m, d.k});
      fill(sa.view(), Fill::kRandom, rng);
      std::vector<std::int32_t> bias(static_cast<std::size_t>(d.n), 77);
      const Int8Out narrow{{bias}, {kn::fixed_point_from_scale(0.002)}, {3}, {-120, 120}, {}};
      Tensor<std::int8_t, 2> n1({d.m, d.n}), n2({d.m, d.n}), nwant({d.m, d.n});
      naive_gemm(sa.cview(), -3, b.cview(), narrow, nwant.view());
      kn::gemm_int8(sa.cview(), -3, packed, narrow, n1.view());
      kn::gemm_int8(sa.cview(), -3, packed, narrow, n2.view(), pool2);
      CHECK(same(nwant, n1));
      CHECK(same(nwant, n2));
      arch::dispatch(arch::best_arch(), [&](auto tag) {
        kn::gemm_int8<decltype(tag)>(a.cview(), 100, packed, deq, two.view(), pool2);
      });
      CHECK(same(one, two));
    }
  }

  TEST_CASE("gemm_int8: runtime dispatch honours VITC_ARCH and reports errors") {
    std::mt19937 rng(9);
    Tensor<std::int8_t, 2> a({3, 10}), b({10, 5});
    fill(a.view(), Fill::kRandom, rng);
    fill(b.view(), Fill::kRandom, rng);
    const kn::PackedWeightsInt8 packed(b.cview());
    Tensor<std::int32_t, 2> c({3, 5}), want({3, 5});
    naive_gemm(a.cview(), 0, b.cview(), kn::RawInt32{}, want.view());
    const char* old = std::getenv("VITC_ARCH");
    const std::string saved = old ? old : "";
    for (const char* name : {"scalar", "xsimd", "avx2", "vnni"}) {
      if (!arch::is_available(arch::select_arch(nullptr))) break;
      setenv("VITC_ARCH", name, 1);
      bool available = true;
      try {
        (void)arch::best_arch();
      } catch (const vitc::ArgumentError&) {
        available = false;
      }
      if (available) {
        kn::gemm_int8(a.cview(), 0, packed, c.view());
        CHECK(same(c, want));
      } else {
        CHECK_THROWS_AS(kn::gemm_int8(a.cview(), 0, packed, c.view()), vitc::ArgumentError);
      }
    }
    setenv("VITC_ARCH", "bogus", 1);
    CHECK_THROWS_WITH_AS(kn::gemm_int8(a.cview(), 0, packed, c.view()),
                         doctest::Contains("VITC_ARCH"), vitc::ArgumentError);
    if (old)
      setenv("VITC_ARCH", saved.c_str(), 1);
    else
      unsetenv("VITC_ARCH");

    Tensor<std::int32_t, 2> wrong({3, 6});
    CHECK_THROWS_AS(kn::gemm_int8(a.cview(), 0, packed, wrong.view()), vitc::ShapeError);
    Tensor<std::int8_t, 2> a_bad({3, 11});
    CHECK_THROWS_AS(kn::gemm_int8(a_bad.cview(), 0, packed, c.view()), vitc::ShapeError);
    CHECK_THROWS_WITH_AS(kn::gemm_int8(a.cview(), 128, packed, c.view()),
                         doctest::Contains("a_zero_point"), vitc::ArgumentError);
    Tensor<std::uint8_t, 2> au({3, 10});
    CHECK_THROWS_AS(kn::gemm_int8(au.cview(), -1, packed, c.view()), vitc::ArgumentError);
    std::vector<std::int32_t> short_bias(4);
    const std::tuple<kn::OutputBiasAdd> bias_stage{{short_bias}};
    CHECK_THROWS_WITH_AS(kn::gemm_int8(a.cview(), 0, packed, bias_stage, c.view()),
                         doctest::Contains("OutputBiasAdd"), vitc::ArgumentError);
    const std::tuple<kn::OutputClamp> bad_clamp{{5, 4}};
    CHECK_THROWS_AS(kn::gemm_int8(a.cview(), 0, packed, bad_clamp, c.view()), vitc::ArgumentError);
    Tensor<std::int32_t, 2> ct({5, 3});
    CHECK_THROWS_AS(kn::gemm_int8(a.cview(), 0, packed, ct.view().transposed()),
                    vitc::ArgumentError);
  }

  TEST_CASE("PackedWeightsInt8: layout, column sums and limits") {
    std::mt19937 rng(10);
    const Index k = 13, n = 35;
    Tensor<std::int8_t, 2> b({k, n});
    fill(b.view(), Fill::kRandom, rng);
    for (auto& v : b.span()) v = v == -128 ? std::int8_t{-127} : v;
    b(4, 33) = -128;
    const kn::PackedWeightsInt8 packed(b.cview());
    CHECK(packed.depth() == k);
    CHECK(packed.cols() == n);
    CHECK(packed.kgroups() == 4);
    CHECK(packed.panels() == 3);
    CHECK(packed.panel_bytes() == 4 * 64);
    CHECK(reinterpret_cast<std::uintptr_t>(packed.panel(1)) % 64 == 0);
    bool layout_ok = true;
    for (Index kk = 0; kk < k; ++kk)
      for (Index j = 0; j < n; ++j) {
        layout_ok &= packed.at(kk, j) == b(kk, j);
        // The documented byte formula.
        layout_ok &= packed.data()[(j / 16) * packed.panel_bytes() + (kk / 4) * 64 + (j % 16) * 4 +
                                   kk % 4] == b(kk, j);
      }
    CHECK(layout_ok);
    bool padding_zero = true;  // k 13..15 and columns 35..47 are zero
    for (Index p = 0; p < packed.panels(); ++p)
      for (Index g = 0; g < packed.kgroups(); ++g)
        for (Index c = 0; c < 16; ++c)
          for (Index j = 0; j < 4; ++j)
            if (4 * g + j >= k || 16 * p + c >= n)
              padding_zero &= packed.panel(p)[g * 64 + c * 4 + j] == 0;
    CHECK(padding_zero);
    for (Index j = 0; j < 48; ++j) {
      std::int32_t sum = 0;
      for (Index kk = 0; kk < k && j < n; ++kk) sum += b(kk, j);
      CHECK(packed.column_sums()[j] == sum);
    }
    CHECK_FALSE(packed.panel_has_min(0));
    CHECK(packed.panel_has_min(2));
    // from_out_in packs the transpose of an [out, in] matrix.
    const Tensor<std::int8_t, 2> w = Tensor<std::int8_t, 2>::copy_of(b.cview().transposed());
    const auto from_w = kn::PackedWeightsInt8::from_out_in(w.cview());
    CHECK(std::memcmp(from_w.data(), packed.data(), static_cast<std::size_t>(packed.bytes())) == 0);
    Tensor<std::int8_t, 2> too_deep({kn::PackedWeightsInt8::kMaxDepth + 1, 1});
    CHECK_THROWS_AS(kn::PackedWeightsInt8(too_deep.cview()), vitc::ShapeError);
    const kn::PackedWeightsInt8 empty(Tensor<std::int8_t, 2>({0, 0}).cview());
    CHECK(empty.panels() == 0);
  }
}

}  // namespace gemm_int8_test
