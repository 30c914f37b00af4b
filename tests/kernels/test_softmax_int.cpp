// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "nonlinear_test_util.hpp"
#include "vitcompress/core/parallel_for.hpp"
#include "vitcompress/kernels/softmax_int.hpp"

using vitc::Index;
using vitc::kernels::IntExpParams;
using vitc::kernels::LinearProb;
using vitc::kernels::Log2Prob;
using vitc::kernels::PolyExp;
using vitc::kernels::prepare_softmax;
using vitc::kernels::ShiftExp;
using vitc::kernels::softmax_int;
using vitc::kernels::SoftmaxParams;
namespace arch = vitc::kernels::arch;
namespace detail = vitc::kernels::detail;
using vitc_test::Strided;

// Named, not anonymous: the test family builds as one unity TU.
namespace softmax_int_test {

std::int64_t floor_div(std::int64_t a, std::int64_t b) {
  std::int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

// I-ViT's int_exp_shift (IntSoftmax, n = 15) on one integer d <= 0, in exact integer arithmetic:
// floor((r/2 − x0)·2^(n−q)), returned as the numerator over 2 to keep it an integer.
std::int64_t ivit_exp_int(std::int64_t d, double scale) {
  const std::int64_t x0 = static_cast<std::int64_t>(std::floor(-1.0 / scale));
  std::int64_t x = d + floor_div(d, 2) - floor_div(d, 16);
  x = std::max(x, 15 * x0);
  const std::int64_t q = floor_div(x, x0);
  const std::int64_t r = x - x0 * q;
  // (r/2 − x0)·2^(15−q) = (r − 2·x0)·2^(14−q); for q = 15 floor((r − 2x0)/2).
  return floor_div((r - 2 * x0) << 15, std::int64_t{1} << (q + 1));
}

// I-BERT's int_exp (IntSoftmax, n = 30): floor(z·2^(30−q)).
std::int64_t ibert_exp_int(std::int64_t d, double scale) {
  const std::int64_t x0 = static_cast<std::int64_t>(std::floor(-0.6931 / scale));
  const std::int64_t b = static_cast<std::int64_t>(std::floor((0.96963238 / 0.35815147) / scale));
  const std::int64_t c =
      static_cast<std::int64_t>(std::floor((1.0 / 0.35815147) / (scale * scale)));
  const std::int64_t x = std::max(d, 30 * x0);
  const std::int64_t q = floor_div(x, x0);
  const std::int64_t r = x - x0 * q;
  const std::int64_t z = r * (r + b) + c;
  return (z << 30) >> q;  // z < 2^26: fits
}

// FQ-ViT's log_round(round(T/E)) with integer arithmetic, clamped to 2^b (= zero).
int fqvit_log2_code(std::int64_t total, std::int64_t e, int bits) {
  if (e == 0) return 1 << bits;
  const std::int64_t t = (2 * total + e) / (2 * e);  // round half up, t >= 1
  const int k = static_cast<int>(std::bit_width(static_cast<std::uint64_t>(t))) - 1;
  int q = k;
  if (k >= 1 && t - (std::int64_t{1} << k) >= (std::int64_t{1} << (k - 1))) ++q;
  return std::min(q, 1 << bits);
}

template <class In>
std::vector<In> random_row(std::mt19937& rng, Index n, double real_span, double scale) {
  std::vector<In> row(static_cast<std::size_t>(n));
  std::uniform_real_distribution<double> dist(-real_span, real_span);
  const double lo = std::numeric_limits<In>::min(), hi = std::numeric_limits<In>::max();
  for (auto& v : row) v = static_cast<In>(std::clamp(std::round(dist(rng) / scale), lo, hi));
  return row;
}

template <class Exp, class Out, class In>
void run_scalar_row(const SoftmaxParams<Exp, Out>& p, const std::vector<In>& x,
                    std::vector<std::uint8_t>& y) {
  y.assign(x.size(), 0);
  detail::softmax_row_scalar(p, x.data(), y.data(), static_cast<Index>(x.size()));
}

TEST_SUITE("kernels") {
  TEST_CASE("prepare_softmax validates its arguments and names them") {
    CHECK_THROWS_WITH_AS((void)prepare_softmax<ShiftExp>(0.0f), doctest::Contains("input_scale"),
                         vitc::ArgumentError);
    CHECK_THROWS_AS((void)prepare_softmax<ShiftExp>(-0.1f), vitc::ArgumentError);
    CHECK_THROWS_AS((void)prepare_softmax<PolyExp>(std::nanf("")), vitc::ArgumentError);
    CHECK_THROWS_AS((void)prepare_softmax<PolyExp>(std::numeric_limits<float>::infinity()),
                    vitc::ArgumentError);
    CHECK_THROWS_WITH_AS((void)prepare_softmax<ShiftExp>(1e-12f), doctest::Contains("input_scale"),
                         vitc::ArgumentError);
    CHECK_THROWS_WITH_AS((void)prepare_softmax<ShiftExp>(0.1f, 0), doctest::Contains("out_bits"),
                         vitc::ArgumentError);
    CHECK_THROWS_AS((void)prepare_softmax<ShiftExp>(0.1f, 9), vitc::ArgumentError);
    CHECK_THROWS_AS(((void)prepare_softmax<ShiftExp, Log2Prob>(0.1f, 8)), vitc::ArgumentError);
    CHECK_NOTHROW(((void)prepare_softmax<PolyExp, Log2Prob>(0.1f, 7)));
    // Fine scales shift the scores right instead of failing.
    const auto p = prepare_softmax<ShiftExp>(1e-6f);
    CHECK(p.exp.pre_shift > 0);
    CHECK(p.exp.divisor <= detail::kShiftExpMaxDivisor);
  }

  TEST_CASE("the magic-number division is exact for every divisor in range") {
    for (int n : {15, 23, 30}) {
      const std::int32_t max_d =
          n == 30 ? detail::kPolyExpMaxDivisor : (n == 23 ? 2416 : detail::kShiftExpMaxDivisor);
      int failures = 0;
      for (std::int32_t d = 1; d <= max_d; ++d) {
        IntExpParams p;
        p.divisor = d;
        REQUIRE(detail::find_magic(d, std::int64_t{n} * d, p.magic, p.magic_shift));
        for (std::int32_t k = 0; k <= n; ++k) {
          for (std::int32_t u : {k * d - 1, k * d, k * d + d - 1}) {
            if (u < 0 || u > n * d) continue;
            if (detail::magic_divide(p, u) != u / d && failures++ < 5) {
              CAPTURE(d);
              CAPTURE(u);
              CHECK(detail::magic_divide(p, u) == u / d);
            }
          }
        }
      }
      CHECK(failures == 0);
    }
  }

#if VITC_HAVE_X86_TARGET_KERNELS
  TEST_CASE("AVX2's 16-bit int8 path divides exactly, or declines, for every ShiftExp divisor") {
    if (!arch::Avx2::available()) return;
    int failures = 0;
    for (float scale : {1.5f, 0.7f, 0.3f, 0.1f, 0.013f, 3e-4f, 2.5e-4f, 2e-6f}) {
      // Every divisor prepare_softmax can produce: one octave of 1 to 4096 input steps.
      const IntExpParams base = prepare_softmax<ShiftExp>(scale).exp;
      for (std::int32_t d = 1; d <= detail::kShiftExpMaxDivisor; ++d) {
        IntExpParams p = base;
        p.divisor = d;
        p.clamp = std::min<std::int64_t>(std::int64_t{15} * d << p.pre_shift, INT32_MAX);
        const detail::nl_avx2::Exp16 e = detail::nl_avx2::make_exp16(p);
        if (d == 1) CHECK_FALSE(e.usable);  // 2^16 does not fit 16 bits
        if (!e.usable) continue;
        // The largest u a score in [−255, 0] reaches (the kernel's bound, recomputed).
        std::int32_t u_max = 0;
        for (std::int32_t x = -255; x <= 0; ++x) {
          const std::int32_t y = std::max(x, -p.clamp) >> p.pre_shift;
          u_max = std::max(u_max, std::min(-(y + (y >> 1) - (y >> 4)), 15 * d));
        }
        for (std::int32_t u = 0; u <= u_max; ++u)
          if ((((u * static_cast<std::int32_t>(e.magic)) >> 16) >> e.shift) != u / d &&
              failures++ < 5) {
            CAPTURE(d);
            CAPTURE(u);
            CHECK((((u * static_cast<std::int32_t>(e.magic)) >> 16) >> e.shift) == u / d);
          }
      }
    }
    CHECK(failures == 0);
  }
#endif

  TEST_CASE("ShiftExp is I-ViT's Shiftmax exponential requantized to 15 bits") {
    for (double scale : {0.25, 0.1, 0.0625, 0.03, 0.01, 1.0 / 3000}) {
      CAPTURE(scale);
      const auto p = prepare_softmax<ShiftExp>(static_cast<float>(scale));
      REQUIRE(p.exp.pre_shift == 0);
      const double s = static_cast<float>(scale);
      CHECK(p.exp.exp_max >= (1 << 14));
      CHECK(p.exp.exp_max < (1 << 15));
      int failures = 0;
      for (std::int32_t d = 0; d >= -p.exp.clamp; --d) {
        const std::int64_t expected = ivit_exp_int(d, s) >> (15 - p.exp.mant_shift);
        const std::int32_t got = detail::int_exp<ShiftExp>(p.exp, d);
        if (got != expected && failures++ < 5) {
          CAPTURE(d);
          CHECK(got == expected);
        }
      }
      CHECK(failures == 0);
    }
  }

  TEST_CASE("PolyExp is I-BERT's i-exp requantized to 15 bits") {
    for (double scale : {0.25, 0.1, 0.03, 0.01, 0.003, 1.0 / 2900}) {
      CAPTURE(scale);
      const auto p = prepare_softmax<PolyExp>(static_cast<float>(scale));
      REQUIRE(p.exp.pre_shift == 0);
      const double s = static_cast<float>(scale);
      const int down = 30 - p.exp.mant_shift + p.exp.shift_bias;  // E = floor(i-exp / 2^down)
      int failures = 0;
      for (std::int32_t d = 0; d >= -p.exp.clamp; --d) {
        const std::int64_t expected = ibert_exp_int(d, s) >> down;
        const std::int32_t got = detail::int_exp<PolyExp>(p.exp, d);
        if (got != expected && failures++ < 5) {
          CAPTURE(d);
          CHECK(got == expected);
        }
      }
      CHECK(failures == 0);
    }
  }

  TEST_CASE("the int8 exponential table equals the formula") {
    const auto p = prepare_softmax<ShiftExp>(0.08f);
    for (int d = 0; d < 256; ++d)
      CHECK(p.int8_exp[static_cast<std::size_t>(d)] ==
            detail::int_exp<ShiftExp>(p.exp, std::max(-d, -p.exp.clamp)));
  }

  TEST_CASE("Log2Prob thresholds give FQ-ViT's log_round(round(T/E))") {
    std::mt19937_64 rng(7);
    int failures = 0;
    for (int bits = 1; bits <= 7; ++bits) {
      for (int trial = 0; trial < 300; ++trial) {
        const std::int64_t total =
            (1 << 14) + static_cast<std::int64_t>(rng() % (1ull << (14 + trial % 30)));
        const auto n = detail::log2_norm(total, bits);
        for (int k = 0; k < 200; ++k) {
          std::int32_t e = static_cast<std::int32_t>(rng() % (1 << (k % 2 ? 15 : 22)));
          if (k < 3) e = k;  // 0, 1, 2
          if (e > total) e = static_cast<std::int32_t>(total);
          const int expected = fqvit_log2_code(total, e, bits);
          if (detail::log2_out(n, e) != expected && failures++ < 5) {
            CAPTURE(total);
            CAPTURE(e);
            CAPTURE(bits);
            CHECK(int{detail::log2_out(n, e)} == expected);
          }
        }
      }
    }
    CHECK(failures == 0);
  }

  TEST_CASE("the Log2Prob thresholds divide exactly by their constant divisors") {
    std::mt19937_64 rng(3);
    for (int j = 1; j <= 56; ++j) {
      const std::uint64_t c = detail::log2_divisor(j);
      for (int k = 0; k < 2000; ++k) {
        std::uint64_t x = rng() >> (8 + rng() % 56);  // < 2^56
        if (k < 4) x = (std::uint64_t{1} << 56) - 1 - static_cast<std::uint64_t>(k);
        if (k >= 4 && k < 8 && c < (std::uint64_t{1} << 45)) x = c * (x % 1000 + 1) - (k % 2);
        if (detail::log2_threshold(x, j) != x / c) {
          CAPTURE(j);
          CAPTURE(x);
          CHECK(detail::log2_threshold(x, j) == x / c);
        }
      }
    }
  }

  TEST_CASE("LinearProb normalization rounds Q*E/T and never exceeds Q") {
    std::mt19937_64 rng(11);
    double worst = 0;
    for (int bits = 1; bits <= 8; ++bits) {
      const std::int64_t q = (1 << bits) - 1;
      for (int trial = 0; trial < 2000; ++trial) {
        const std::int64_t total =
            (1 << 14) + static_cast<std::int64_t>(rng() % (1ull << (trial % 32)));
        const auto n = detail::linear_norm(total, bits);
        CHECK(n.factor >= (1 << 15));
        CHECK(n.factor < (1 << 16));
        for (int k = 0; k < 20; ++k) {
          const std::int32_t e = static_cast<std::int32_t>(
              std::min<std::int64_t>(total, static_cast<std::int64_t>(rng() % (1 << 15))));
          const int out = detail::linear_out(n, e);
          const double exact = double(q) * e / double(total);
          worst = std::max(worst, std::abs(out - exact));
          CHECK(out <= q);
        }
        CHECK(detail::linear_out(
                  n, static_cast<std::int32_t>(std::min<std::int64_t>(total, 32767))) <= q);
      }
    }
    CHECK(worst <= 0.52);
  }

  TEST_CASE("softmax accuracy against float64 (the bounds stated in softmax_int.hpp)") {
    // Three bands of input scale; the published algorithms round one octave (ln 2, or 1 after the
    // log2 e shifts) to a whole number of input steps, so coarse scales are less accurate.
    struct Band {
      double coarse, fine;
      double bound_shift, bound_poly;
      int bound_levels;
    };
    const Band bands[] = {{1.0 / 8, 1.0 / 32, 0.07, 0.07, 2},
                          {1.0 / 32, 1.0 / 256, 0.035, 0.017, 1},
                          {1.0 / 256, 1e-7, 0.019, 0.0035, 1}};
    for (const Band& band : bands) {
      std::mt19937 rng(2026);
      double worst_shift = 0, worst_poly = 0;
      int levels_shift = 0, levels_poly = 0;
      for (double scale = band.coarse; scale >= band.fine; scale /= 1.37) {
        const auto ps = prepare_softmax<ShiftExp>(static_cast<float>(scale));
        const auto pp = prepare_softmax<PolyExp>(static_cast<float>(scale));
        const auto ls = prepare_softmax<ShiftExp, Log2Prob>(static_cast<float>(scale), 4);
        const auto lp = prepare_softmax<PolyExp, Log2Prob>(static_cast<float>(scale), 4);
        const double s = static_cast<float>(scale);
        for (Index n : {1, 2, 3, 5, 17, 64, 197, 1000, 4096}) {
          for (double span : {1.0, 4.0, 8.0, 20.0}) {
            const auto x = random_row<std::int32_t>(rng, n, span, s);
            double mx = -1e300;
            for (auto v : x) mx = std::max(mx, v * s);
            std::vector<double> p(x.size());
            double sum = 0;
            for (std::size_t i = 0; i < x.size(); ++i) sum += p[i] = std::exp(x[i] * s - mx);
            for (auto& v : p) v /= sum;
            auto level = [](double prob) {
              const double q = std::round(-std::log2(prob));
              return q >= 16 ? 16 : static_cast<int>(q);
            };
            std::vector<std::uint8_t> y;
            run_scalar_row(ps, x, y);
            for (std::size_t i = 0; i < x.size(); ++i)
              worst_shift = std::max(worst_shift, std::abs(y[i] / 255.0 - p[i]));
            run_scalar_row(pp, x, y);
            for (std::size_t i = 0; i < x.size(); ++i)
              worst_poly = std::max(worst_poly, std::abs(y[i] / 255.0 - p[i]));
            run_scalar_row(ls, x, y);
            for (std::size_t i = 0; i < x.size(); ++i)
              levels_shift = std::max(levels_shift, std::abs(int{y[i]} - level(p[i])));
            run_scalar_row(lp, x, y);
            for (std::size_t i = 0; i < x.size(); ++i)
              levels_poly = std::max(levels_poly, std::abs(int{y[i]} - level(p[i])));
          }
        }
      }
      CAPTURE(band.coarse);
      MESSAGE("S in [" << band.fine << ", " << band.coarse << "]: max |p_int - p| (8-bit linear) "
                       << "shift " << worst_shift << ", poly " << worst_poly
                       << "; 4-bit log2 level error: shift " << levels_shift << ", poly "
                       << levels_poly);
      CHECK(worst_shift <= band.bound_shift);
      CHECK(worst_poly <= band.bound_poly);
      CHECK(levels_shift <= band.bound_levels);
      CHECK(levels_poly <= band.bound_levels);
    }
  }

  TEST_CASE("constant, single-element and fully masked rows") {
    const auto p = prepare_softmax<ShiftExp>(0.1f);
    std::vector<std::int8_t> x(197, -128);
    std::vector<std::uint8_t> y(197);
    detail::softmax_row_scalar(p, x.data(), y.data(), 197);
    for (auto v : y) CHECK(v == 1);  // round(255/197)
    detail::softmax_row_scalar(p, x.data(), y.data(), 1);
    CHECK(y[0] == 255);
    const auto l = prepare_softmax<PolyExp, Log2Prob>(0.1f, 4);
    y.resize(256);
    std::vector<std::int32_t> z(256, std::numeric_limits<std::int32_t>::min());
    z[3] = std::numeric_limits<std::int32_t>::max();
    detail::softmax_row_scalar(l, z.data(), y.data(), 256);
    CHECK(y[3] == 0);                                                       // p = 1 -> 2^0
    for (int i : {0, 1, 255}) CHECK(y[static_cast<std::size_t>(i)] == 16);  // masked: zero
  }

  TEST_CASE_TEMPLATE("every softmax SIMD path equals the scalar reference bit for bit", Arch,
                     VITC_KERNEL_ARCH_TAGS) {
    if (!vitc_test::arch_runs<Arch>()) return;
    std::mt19937 rng(99);
    auto check_all = [&](auto params, auto sample) {
      using In = decltype(sample);
      for (Index cols :
           {0, 1, 2, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65, 197, 1000, 4096, 4099}) {
        const Index rows = cols > 1000 ? 3 : 12;
        for (int mode = 0; mode < 6; ++mode) {
          Strided<In> x(rows, cols, 3, 1);
          const double lo = std::numeric_limits<In>::min(), hi = std::numeric_limits<In>::max();
          for (Index r = 0; r < rows; ++r) {
            for (Index c = 0; c < cols; ++c) {
              In v{};
              switch (mode) {
                case 0:
                  v = static_cast<In>(
                      std::clamp(std::round(std::normal_distribution<double>(0, 40)(rng)), lo, hi));
                  break;
                case 1:
                  v = std::numeric_limits<In>::min();
                  break;
                case 2:
                  v = std::numeric_limits<In>::max();
                  break;
                case 3:
                  v = (rng() & 1) ? std::numeric_limits<In>::max() : std::numeric_limits<In>::min();
                  break;
                case 4:
                  v = static_cast<In>(static_cast<std::int64_t>(rng()) % 2000 - 1000);
                  break;
                default:
                  v = static_cast<In>(std::clamp(double(static_cast<std::int32_t>(rng())), lo, hi));
                  break;
              }
              x.row(r)[c] = v;
            }
          }
          Strided<std::uint8_t> ref(rows, cols, 5, 3, 0xAB), got(rows, cols, 5, 3, 0xAB);
          softmax_int<arch::Scalar>(params, x.cview(), ref.view());
          softmax_int<Arch>(params, x.cview(), got.view());
          const Index bad = vitc_test::first_mismatch(ref, got);
          if (bad >= 0) {
            CAPTURE(cols);
            CAPTURE(mode);
            CAPTURE(bad);
            CHECK(int{got.row(bad / std::max<Index>(cols, 1))[bad % std::max<Index>(cols, 1)]} ==
                  int{ref.row(bad / std::max<Index>(cols, 1))[bad % std::max<Index>(cols, 1)]});
          }
          CHECK(got.storage == ref.storage);  // also: nothing written outside the view
        }
      }
    };
    // 1.5 and 0.25: one octave is 1 and 4 input steps (AVX2's 16-bit int8 path has no magic
    // number for 1 and falls back; 4 is a power of two).
    for (float scale : {1.5f, 0.25f, 0.1f, 0.013f, 3e-4f, 2e-6f}) {
      CAPTURE(scale);
      check_all(prepare_softmax<ShiftExp>(scale), std::int8_t{});
      check_all(prepare_softmax<ShiftExp>(scale), std::int32_t{});
      check_all(prepare_softmax<PolyExp>(scale, 7), std::int8_t{});
      check_all(prepare_softmax<PolyExp>(scale), std::int32_t{});
      check_all(prepare_softmax<ShiftExp, Log2Prob>(scale, 4), std::int8_t{});
      check_all(prepare_softmax<PolyExp, Log2Prob>(scale, 4), std::int32_t{});
      check_all(prepare_softmax<PolyExp, Log2Prob>(scale, 3), std::int8_t{});
      // More than 16 log2 levels (the counting branch) and a narrow linear output.
      check_all(prepare_softmax<ShiftExp, Log2Prob>(scale, 6), std::int32_t{});
      check_all(prepare_softmax<PolyExp, Log2Prob>(scale, 7), std::int8_t{});
      check_all(prepare_softmax<ShiftExp>(scale, 3), std::int32_t{});
    }
  }

  TEST_CASE("softmax_int checks shapes and strides, and threads give the same result") {
    const auto p = prepare_softmax<ShiftExp>(0.1f);
    Strided<std::int8_t> x(4, 8, 0, 0);
    Strided<std::uint8_t> y(4, 7, 0, 0);
    CHECK_THROWS_AS(softmax_int(p, x.cview(), y.view()), vitc::ShapeError);
    Strided<std::uint8_t> y2(4, 8, 0, 0);
    vitc::TensorView<const std::int8_t, 2> xt(x.storage.data(), {4, 8}, {1, 4});
    CHECK_THROWS_AS(softmax_int(p, xt, y2.view()), vitc::ArgumentError);

    std::mt19937 rng(5);
    Strided<std::int8_t> big(197, 197, 0, 0);
    for (auto& v : big.storage) v = static_cast<std::int8_t>(rng());
    Strided<std::uint8_t> a(197, 197, 0, 0), b(197, 197, 0, 0);
    softmax_int(p, big.cview(), a.view());
    vitc::ThreadPool pool(2);
    softmax_int(p, big.cview(), b.view(), pool);
    CHECK(a.storage == b.storage);
  }

  TEST_CASE("the nonlinear kernels kept their SIMD paths") {
#if defined(__AVX2__) || defined(__ARM_NEON)
    CHECK(arch::XsimdNative::available());
#endif
#if VITC_HAVE_X86_TARGET_KERNELS
    if (vitc::cpu_features().avx2) CHECK(arch::Avx2::available());
#endif
  }
}

}  // namespace softmax_int_test
