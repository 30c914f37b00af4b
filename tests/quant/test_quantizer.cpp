// SPDX-License-Identifier: Apache-2.0
// Schemes, granularities and the tensor quantizer: the contracts of quant/scheme.hpp and
// quant/quantizer.hpp.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "quant_test_util.hpp"
#include "vitcompress/core/float16.hpp"
#include "vitcompress/quant/quantizer.hpp"

namespace {

using namespace vitc;
using namespace vitc::quant;

// Bits out of range do not form a type (the constraint, not a hard error, so it can be tested).
template <int B>
concept SymmetricForms = requires {
  typename Symmetric<B>;
};
template <int B>
concept AsymmetricForms = requires {
  typename Asymmetric<B>;
};
template <int B>
concept Log2Forms = requires {
  typename Log2<B>;
};

static_assert(ValidBits<2> && ValidBits<4> && ValidBits<8>);
static_assert(!ValidBits<1> && !ValidBits<9> && !ValidBits<0> && !ValidBits<-4>);
static_assert(SymmetricForms<2> && SymmetricForms<8> && !SymmetricForms<1> && !SymmetricForms<9>);
static_assert(AsymmetricForms<8> && !AsymmetricForms<16>);
static_assert(Log2Forms<4> && !Log2Forms<9>);
static_assert(QuantScheme<Symmetric<8>> && QuantScheme<Fp16> && QuantScheme<LogSqrt2<4>>);
static_assert(!QuantScheme<int>);
static_assert(QuantGranularity<PerTensor> && QuantGranularity<PerChannel> &&
              QuantGranularity<PerGroup<32>>);
static_assert(TensorQuantizer<Quantizer<Symmetric<8>, PerChannel>>);
static_assert(TensorQuantizer<Quantizer<Asymmetric<4>, PerTensor>>);
// The restricted symmetric range: ±(2^(b−1) − 1).
static_assert(Symmetric<8>::kSpec.qmin() == -127 && Symmetric<8>::kSpec.qmax() == 127);
static_assert(Symmetric<4>::kSpec.qmin() == -7 && Symmetric<4>::kSpec.qmax() == 7);
static_assert(Asymmetric<4>::kSpec.qmin() == 0 && Asymmetric<4>::kSpec.qmax() == 15);

std::vector<SchemeSpec> affine_specs() {
  std::vector<SchemeSpec> v;
  for (int b = kMinBits; b <= kMaxBits; ++b) {
    v.push_back({SchemeKind::kSymmetric, b});
    v.push_back({SchemeKind::kAsymmetric, b});
  }
  return v;
}

}  // namespace

TEST_SUITE("quant") {
  TEST_CASE("affine schemes: round trip within half a step inside the clip range") {
    std::mt19937_64 rng(7);
    const Range ranges[] = {{-1.0f, 1.0f},  {-0.3f, 1.7f},   {0.25f, 3.0f},
                            {-5.0f, -0.5f}, {-1e-3f, 2e-3f}, {-100.0f, 40.0f}};
    for (const SchemeSpec s : affine_specs()) {
      for (const Range r : ranges) {
        CAPTURE(to_string(s.kind));
        CAPTURE(s.bits);
        CAPTURE(r.lo);
        CAPTURE(r.hi);
        const QuantParams p = params_from_range(r, s);
        const Range clip = clip_range(p, s);
        // The observed range is inside the clip range, up to half a step at either end.
        CHECK(clip.lo <= r.lo + 0.5f * p.scale * (1 + 1e-5f));
        CHECK(clip.hi >= r.hi - 0.5f * p.scale * (1 + 1e-5f));
        for (int i = 0; i < 2000; ++i) {
          const float u = static_cast<float>(static_cast<double>(rng() >> 11) * 0x1p-53);
          const float x = clip.lo + (clip.hi - clip.lo) * u;
          const float xq = fake_quantize_value(x, p, s);
          const float tol = 0.5f * p.scale + 4 * std::numeric_limits<float>::epsilon() *
                                                 std::max(std::abs(x), std::abs(clip.hi - clip.lo));
          REQUIRE(std::abs(xq - x) <= tol);
          // Every fake-quantized value is on the grid s·(q − z) of a code in range.
          const std::int32_t q = quantize_value(x, p, s);
          REQUIRE(q >= s.qmin());
          REQUIRE(q <= s.qmax());
          REQUIRE(xq == dequantize_value(q, p, s));
        }
      }
    }
  }

  TEST_CASE("affine schemes: saturation outside the clip range") {
    for (const SchemeSpec s : affine_specs()) {
      CAPTURE(to_string(s.kind));
      CAPTURE(s.bits);
      const QuantParams p = params_from_range({-0.7f, 1.3f}, s);
      const Range clip = clip_range(p, s);
      for (float beyond : {1.0f, 3.5f, 1e6f, 1e30f}) {
        CHECK(quantize_value(clip.hi + beyond * p.scale, p, s) == s.qmax());
        CHECK(quantize_value(clip.lo - beyond * p.scale, p, s) == s.qmin());
        CHECK(fake_quantize_value(clip.hi + beyond * p.scale, p, s) == clip.hi);
        CHECK(fake_quantize_value(clip.lo - beyond * p.scale, p, s) == clip.lo);
      }
    }
  }

  TEST_CASE("zero is exactly representable") {
    const Range ranges[] = {{-1.0f, 1.0f},   {-0.31f, 1.77f}, {0.5f, 2.0f},  {-3.0f, -1.0f},
                            {-1e-4f, 7e-3f}, {0.0f, 0.0f},    {-2.3f, 0.01f}};
    for (const SchemeSpec s : affine_specs())
      for (const Range r : ranges) {
        CAPTURE(to_string(s.kind));
        CAPTURE(s.bits);
        CAPTURE(r.lo);
        CAPTURE(r.hi);
        const QuantParams p = params_from_range(r, s);
        CHECK(fake_quantize_value(0.0f, p, s) == 0.0f);
        CHECK(quantize_value(0.0f, p, s) == p.zero_point);
      }
    for (SchemeSpec s : {SchemeSpec{SchemeKind::kLog2, 4}, SchemeSpec{SchemeKind::kLogSqrt2, 3}}) {
      const QuantParams p = params_from_range({0.0f, 1.0f}, s);
      CHECK(fake_quantize_value(0.0f, p, s) == 0.0f);
      CHECK(quantize_value(0.0f, p, s) == kLogZeroCode);
      CHECK(fake_quantize_value(-0.25f, p, s) == 0.0f);  // log schemes: x <= 0 -> 0
    }
    CHECK(fake_quantize_value(0.0f, {}, Fp16::kSpec) == 0.0f);
  }

  TEST_CASE("symmetric scale and asymmetric zero point from a range") {
    const QuantParams s8 = params_from_range({-0.5f, 2.54f}, Symmetric<8>::kSpec);
    CHECK(s8.scale == doctest::Approx(2.54 / 127).epsilon(1e-6));
    CHECK(s8.zero_point == 0);
    const QuantParams a8 = params_from_range({-1.0f, 3.0f}, Asymmetric<8>::kSpec);
    CHECK(a8.scale == doctest::Approx(4.0 / 255).epsilon(1e-6));
    CHECK(a8.zero_point == 64);  // round(1 / (4/255)) = round(63.75)
    // A positive-only range is extended to include 0: zero point 0.
    CHECK(params_from_range({0.5f, 2.0f}, Asymmetric<4>::kSpec).zero_point == 0);
    CHECK(params_from_range({0.5f, 2.0f}, Asymmetric<4>::kSpec).scale ==
          doctest::Approx(2.0 / 15).epsilon(1e-6));
    // A degenerate range gives scale 1.
    CHECK(params_from_range({0.0f, 0.0f}, Symmetric<8>::kSpec).scale == 1.0f);
  }

  TEST_CASE("log2 levels are exact powers of two; values below the last level become 0") {
    for (int b = kMinBits; b <= kMaxBits; ++b) {
      for (float s : {1.0f, 0.75f, 3.0f}) {
        CAPTURE(b);
        CAPTURE(s);
        const SchemeSpec spec{SchemeKind::kLog2, b};
        const QuantParams p{s, 0};
        int s_exp = 0;
        const float s_frac = std::frexp(s, &s_exp);
        for (std::int32_t q = 0; q <= spec.qmax(); ++q) {
          const float level = dequantize_value(q, p, spec);
          // 8-bit log2 reaches 2^-255: levels below the smallest normal float are out of float's
          // reach (documented in scheme.hpp), so the exactness claim covers normal levels.
          if (std::ldexp(static_cast<double>(s), -q) < std::numeric_limits<float>::min()) break;
          int e = 0;
          const float frac = std::frexp(level, &e);
          CHECK(frac == s_frac);  // same mantissa as s: s times an exact power of two
          CHECK(e == s_exp - q);
          CHECK(quantize_value(level, p, spec) == q);  // every level is a fixed point
        }
        const float last = dequantize_value(spec.qmax(), p, spec);
        CHECK(fake_quantize_value(last * 0.5f, p, spec) == 0.0f);
        CHECK(fake_quantize_value(last * 0.75f, p, spec) == last);  // rounds up to the last level
        CHECK(fake_quantize_value(4 * s, p, spec) == s);            // saturates at s
      }
    }
    // Rounding is in the log domain: x̂ / x within [2^−1/2, 2^1/2] for x in [last level, s].
    const SchemeSpec l4{SchemeKind::kLog2, 4};
    std::mt19937_64 rng(3);
    for (int i = 0; i < 5000; ++i) {
      const float x =
          std::exp2(-15.0f * static_cast<float>(static_cast<double>(rng() >> 11) * 0x1p-53));
      const float r = fake_quantize_value(x, {1.0f, 0}, l4) / x;
      REQUIRE(r >= 0.70710677f);
      REQUIRE(r <= 1.41421357f);
    }
  }

  TEST_CASE("log sqrt2 levels: 2^(-q/2), exact powers of two for even codes") {
    const SchemeSpec spec{SchemeKind::kLogSqrt2, 4};
    const QuantParams p{1.0f, 0};
    for (std::int32_t q = 0; q <= spec.qmax(); ++q) {
      CAPTURE(q);
      const float level = dequantize_value(q, p, spec);
      CHECK(level == doctest::Approx(std::exp2(-0.5 * q)).epsilon(1e-7));
      if (q % 2 == 0) CHECK(level == std::ldexp(1.0f, -q / 2));
      CHECK(quantize_value(level, p, spec) == q);
    }
    CHECK(fake_quantize_value(std::exp2(-8.0f), p, spec) == 0.0f);  // below 2^-7.5
  }

  TEST_CASE("fp16: IEEE half, round to nearest even") {
    const SchemeSpec s = Fp16::kSpec;
    CHECK(fake_quantize_value(1.0f + 0x1p-11f, {}, s) == 1.0f);                // tie -> even
    CHECK(fake_quantize_value(1.0f + 3 * 0x1p-11f, {}, s) == 1.0f + 0x1p-9f);  // tie -> even (up)
    CHECK(fake_quantize_value(65504.0f, {}, s) == 65504.0f);
    CHECK(fake_quantize_value(0.1f, {}, s) == half_bits_to_float(float_to_half_bits(0.1f)));
    CHECK(quantize_value(-2.0f, {}, s) == 0xC000);
    auto x = test::uniform_tensor(7, 9, -3.0f, 3.0f, 11);
    TensorQuantParams p{s, {}, {1.0f}, {0}};
    auto codes = quantize<std::uint16_t>(x.cview(), p, "x");
    auto y = dequantize<std::uint16_t>(codes.cview(), p, "x");
    for (Index i = 0; i < x.size(); ++i)
      CHECK(y.data()[i] == half_bits_to_float(float_to_half_bits(x.data()[i])));
  }

  TEST_CASE("bits out of range at run time are an ArgumentError") {
    for (int bits : {-1, 0, 1, 9, 16}) {
      CAPTURE(bits);
      test::check_throws_containing<ArgumentError>(
          [&] {
            SchemeSpec{SchemeKind::kSymmetric, bits}.validate("blocks.0.attn.qkv.weight");
          },
          "blocks.0.attn.qkv.weight");
      CHECK_THROWS_AS((void)params_from_range({-1, 1}, {SchemeKind::kAsymmetric, bits}),
                      ArgumentError);
      CHECK_THROWS_AS((void)params_from_range({0, 1}, {SchemeKind::kLog2, bits}), ArgumentError);
    }
    // Fp16 and none ignore bits.
    CHECK_NOTHROW(SchemeSpec{SchemeKind::kFp16, 16}.validate("x"));
    CHECK_NOTHROW(SchemeSpec{SchemeKind::kNone, 32}.validate("x"));
  }

  TEST_CASE("NaN or infinity in the data is an ArgumentError naming the tensor") {
    for (float bad :
         {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
          -std::numeric_limits<float>::infinity()}) {
      auto x = test::uniform_tensor(4, 5, -1, 1, 1);
      x(2, 3) = bad;
      const Quantizer<Symmetric<8>, PerTensor> q;
      test::check_throws_containing<ArgumentError>([&] { (void)q.calibrate(x.cview(), "fc1 w"); },
                                                   "fc1 w");
      TensorQuantParams p{Symmetric<8>::kSpec, {}, {0.1f}, {0}};
      Tensor<float, 2> y(x.shape());
      test::check_throws_containing<ArgumentError>(
          [&] { fake_quantize(x.cview(), p, y.view(), "blocks.1.mlp.fc2.weight"); },
          "blocks.1.mlp.fc2.weight");
      test::check_throws_containing<ArgumentError>(
          [&] { (void)quantize<std::int8_t>(x.cview(), p, "head.weight"); }, "head.weight");
      test::check_throws_containing<ArgumentError>(
          [&] {
            (void)params_from_range({0.0f, bad}, Symmetric<8>::kSpec, "calib range");
          },
          "calib range");
    }
  }

  TEST_CASE("granularities: groups, parameters and dequantize(quantize) == fake_quantize") {
    const auto x = test::uniform_tensor(6, 70, -2.0f, 3.0f, 5);
    const GranularitySpec grans[] = {PerTensor::spec(),    PerChannel{0}.spec(),
                                     PerChannel{1}.spec(), PerGroup<32>::spec(),
                                     PerGroup<7>::spec(),  PerGroup<128>::spec()};
    const Index expected_groups[] = {1, 6, 70, 6 * 3, 6 * 10, 6};
    const SchemeSpec schemes[] = {{SchemeKind::kSymmetric, 8},  {SchemeKind::kSymmetric, 4},
                                  {SchemeKind::kAsymmetric, 8}, {SchemeKind::kAsymmetric, 3},
                                  {SchemeKind::kLog2, 4},       {SchemeKind::kLogSqrt2, 5}};
    for (std::size_t gi = 0; gi < std::size(grans); ++gi) {
      const GranularitySpec g = grans[gi];
      CHECK(g.num_groups(6, 70) == expected_groups[gi]);
      for (const SchemeSpec s : schemes) {
        CAPTURE(gi);
        CAPTURE(to_string(s.kind));
        CAPTURE(s.bits);
        const auto ranges = group_ranges(x.cview(), g, "x");
        REQUIRE(static_cast<Index>(ranges.size()) == expected_groups[gi]);
        const auto p = params_from_ranges({s, g}, ranges, "x");
        Tensor<float, 2> fq(x.shape());
        fake_quantize(x.cview(), p, fq.view(), "x");
        auto codes = quantize<std::int16_t>(x.cview(), p, "x");
        auto deq = dequantize<std::int16_t>(codes.cview(), p, "x");
        for (Index r = 0; r < 6; ++r)
          for (Index c = 0; c < 70; ++c) REQUIRE(fq(r, c) == deq(r, c));
        // Each element uses its own group's parameters.
        for_each_group_run(g, 6, 70, [&](Index r, Index c0, Index c1, Index grp) {
          for (Index c = c0; c < c1; ++c)
            REQUIRE(fq(r, c) == fake_quantize_value(x(r, c), p.group(grp), s));
        });
      }
    }
    // Per-channel scales: max |row| / 127 per output channel.
    const Quantizer<Symmetric<8>, PerChannel> q(PerChannel{0});
    const auto p = q.calibrate(x.cview(), "w");
    for (Index r = 0; r < 6; ++r) {
      float amax = 0;
      for (Index c = 0; c < 70; ++c) amax = std::max(amax, std::abs(x(r, c)));
      CHECK(p.scales[static_cast<std::size_t>(r)] == amax / 127.0f);
    }
  }

  TEST_CASE("strided views and in-place fake quantization") {
    auto base = test::uniform_tensor(5, 12, -1.0f, 1.0f, 9);
    const auto cols = base.view().slice(1, 4, 10);  // a strided column block, like q of qkv
    const Quantizer<Asymmetric<6>, PerTensor> q;
    const auto p = q.calibrate(TensorView<const float, 2>(cols), "q");
    Tensor<float, 2> expected(cols.shape());
    q.fake_quantize(cols, p, expected.view(), "q");
    const Tensor<float, 2> before = base;
    q.fake_quantize(cols, p, cols, "q");  // in place
    for (Index r = 0; r < 5; ++r)
      for (Index c = 0; c < 12; ++c) {
        if (c >= 4 && c < 10)
          CHECK(base(r, c) == expected(r, c - 4));
        else
          CHECK(base(r, c) == before(r, c));  // untouched outside the view
      }
  }

  TEST_CASE("argument checks: code type, parameter count, scheme mismatch") {
    const auto x = test::uniform_tensor(3, 4, -1, 1, 2);
    TensorQuantParams a8{Asymmetric<8>::kSpec, {}, {0.01f}, {128}};
    CHECK_THROWS_AS((void)quantize<std::int8_t>(x.cview(), a8, "x"), ArgumentError);
    CHECK_NOTHROW((void)quantize<std::uint8_t>(x.cview(), a8, "x"));
    TensorQuantParams wrong{Symmetric<8>::kSpec, PerChannel{0}.spec(), {0.1f, 0.1f}, {0, 0}};
    test::check_throws_containing<ArgumentError>(
        [&] { (void)quantize<std::int8_t>(x.cview(), wrong, "proj"); }, "proj");
    TensorQuantParams zero_scale{Symmetric<8>::kSpec, {}, {0.0f}, {0}};
    CHECK_THROWS_AS((void)quantize<std::int8_t>(x.cview(), zero_scale, "x"), ArgumentError);
    const Quantizer<Symmetric<4>, PerTensor> q4;
    Tensor<float, 2> y(x.shape());
    CHECK_THROWS_AS(q4.fake_quantize(x.cview(), a8, y.view(), "x"), ArgumentError);
    Tensor<float, 2> small({2, 4});
    CHECK_THROWS_AS(fake_quantize(x.cview(), a8, small.view(), "x"), ShapeError);
    CHECK_THROWS_AS(GranularitySpec({GranularityKind::kChannel, 2, 0}).validate("x"),
                    ArgumentError);
  }
}
