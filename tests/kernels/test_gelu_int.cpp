// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "nonlinear_test_util.hpp"
#include "vitcompress/core/parallel_for.hpp"
#include "vitcompress/kernels/gelu_int.hpp"

using vitc::Index;
using vitc::kernels::gelu_int;
using vitc::kernels::GeluParams;
using vitc::kernels::IGelu;
using vitc::kernels::prepare_gelu;
using vitc::kernels::ShiftGelu;
namespace arch = vitc::kernels::arch;
namespace detail = vitc::kernels::detail;
using vitc_test::Strided;

namespace {

double gelu(double x) { return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))); }
double gelu_sigmoid(double x) { return x / (1.0 + std::exp(-1.702 * x)); }

std::int64_t floor_div(std::int64_t a, std::int64_t b) {
  std::int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

// I-BERT's IntGELU.forward on x_p in 64-bit integers (b, c, n, one from the parameters, which
// prepare_gelu derives with I-BERT's floors): checks the 32-bit evaluation cannot overflow.
template <class In>
std::int64_t ibert_g(const GeluParams<IGelu, In>& p, std::int64_t xp) {
  const std::int64_t b = p.erf_b, c = p.erf_c;
  const std::int64_t a = std::min<std::int64_t>(std::abs(xp), -b);
  std::int64_t y = (a + b) * (a + b) + c;
  y = xp > 0 ? y : (xp < 0 ? -y : 0);
  return xp * (floor_div(y, std::int64_t{1} << p.erf_shift) + p.erf_one);
}

// Max error in output LSBs of the int8 GELU against f, over the given inputs.
template <class Policy, class In>
double max_lsb_error(const GeluParams<Policy, In>& p, const std::vector<std::int32_t>& xs, double s,
                     double so, double (*f)(double)) {
  double worst = 0;
  for (std::int32_t x : xs) {
    const double want = std::clamp(f(x * s) / so, -128.0, 127.0);
    worst = std::max(worst, std::abs(detail::gelu_int_scalar(p, x) - want));
  }
  return worst;
}

}  // namespace

TEST_SUITE("kernels") {
  TEST_CASE("prepare_gelu validates its arguments and names them") {
    CHECK_THROWS_WITH_AS((void)prepare_gelu<IGelu>(0.0f, 0.1f), doctest::Contains("input_scale"),
                         vitc::ArgumentError);
    CHECK_THROWS_WITH_AS((void)prepare_gelu<ShiftGelu>(0.1f, -1.0f),
                         doctest::Contains("output_scale"), vitc::ArgumentError);
    CHECK_THROWS_AS((void)prepare_gelu<IGelu>(std::nanf(""), 0.1f), vitc::ArgumentError);
    CHECK_THROWS_AS((void)prepare_gelu<ShiftGelu>(0.1f, std::numeric_limits<float>::infinity()),
                    vitc::ArgumentError);
    CHECK_THROWS_WITH_AS((void)prepare_gelu<IGelu>(0.1f, 1e-9f), doctest::Contains("output_scale"),
                         vitc::ArgumentError);
  }

  TEST_CASE("I-GELU's g equals I-BERT's formula evaluated in 64 bits") {
    std::mt19937 rng(1);
    for (double s : {0.2, 0.05, 0.01, 1e-3, 1e-4, 1e-5}) {
      for (double so : {0.002, 0.03, 0.2}) {
        CAPTURE(s);
        CAPTURE(so);
        const auto p8 =
            prepare_gelu<IGelu, std::int8_t>(static_cast<float>(s), static_cast<float>(so));
        for (int x = -128; x < 128; ++x) {
          const std::int64_t xp = std::clamp(x, p8.in_min, p8.in_max) >> p8.pre_shift;
          REQUIRE(detail::gelu_int_g(p8, x) == ibert_g(p8, xp));
        }
        const auto p32 =
            prepare_gelu<IGelu, std::int32_t>(static_cast<float>(s), static_cast<float>(so));
        for (int k = 0; k < 20000; ++k) {
          std::int32_t x = static_cast<std::int32_t>(rng());
          if (k % 2) x >>= (rng() % 31);
          const std::int64_t xp = std::clamp(x, p32.in_min, p32.in_max) >> p32.pre_shift;
          if (detail::gelu_int_g(p32, x) != ibert_g(p32, xp)) {
            CAPTURE(x);
            REQUIRE(detail::gelu_int_g(p32, x) == ibert_g(p32, xp));
          }
        }
      }
    }
  }

  TEST_CASE("GELU accuracy against the float functions (the bounds stated in gelu_int.hpp)") {
    // Error in real units beyond the half output step of rounding, and in output LSBs.
    double beyond_i = 0, beyond_s = 0, lsb_i = 0, lsb_s = 0, range_rel = 0, lsb_sig = 0;
    auto account = [&](auto& p, const std::vector<std::int32_t>& xs, double s, double so,
                       double& beyond, double& lsb, bool int8_input) {
      const double e = max_lsb_error(p, xs, s, so, gelu);
      beyond = std::max(beyond, (e - 0.5) * so);
      lsb = std::max(lsb, e);
      if (int8_input) range_rel = std::max(range_rel, e * so / (255 * s));
    };
    std::mt19937 rng(2);
    for (double s : {0.1, 0.05, 0.02, 0.01}) {
      // int8 inputs: every value; output scale from the output range.
      std::vector<std::int32_t> all8;
      for (int x = -128; x < 128; ++x) all8.push_back(x);
      const double so = gelu(127 * s) / 127;
      const auto pi = prepare_gelu<IGelu>(static_cast<float>(s), static_cast<float>(so));
      const auto ps = prepare_gelu<ShiftGelu>(static_cast<float>(s), static_cast<float>(so));
      const double sf = static_cast<float>(s), sof = static_cast<float>(so);
      account(pi, all8, sf, sof, beyond_i, lsb_i, true);
      account(ps, all8, sf, sof, beyond_s, lsb_s, true);
      lsb_sig = std::max(lsb_sig, max_lsb_error(ps, all8, sf, sof, gelu_sigmoid));
    }
    for (double s : {1e-3, 1e-4, 1e-5}) {
      // int32 inputs (accumulators) across ±4 times the output range, S_out for GELU in [−0.2, 10].
      const double so = 10.0 / 127;
      const auto pi =
          prepare_gelu<IGelu, std::int32_t>(static_cast<float>(s), static_cast<float>(so));
      const auto ps =
          prepare_gelu<ShiftGelu, std::int32_t>(static_cast<float>(s), static_cast<float>(so));
      const double sf = static_cast<float>(s), sof = static_cast<float>(so);
      std::vector<std::int32_t> xs;
      std::uniform_real_distribution<double> dist(-40.0, 40.0);
      for (int k = 0; k < 50000; ++k)
        xs.push_back(static_cast<std::int32_t>(std::round(dist(rng) / sf)));
      account(pi, xs, sf, sof, beyond_i, lsb_i, false);
      account(ps, xs, sf, sof, beyond_s, lsb_s, false);
    }
    MESSAGE("GELU error: I-GELU " << lsb_i << " LSB (" << beyond_i << " beyond half an LSB), "
                                  << "ShiftGELU " << lsb_s << " LSB (" << beyond_s
                                  << "), max over int8 inputs relative to the input range "
                                  << range_rel << "; ShiftGELU vs x*sigmoid(1.702x) " << lsb_sig
                                  << " LSB");
    CHECK(beyond_i <= 0.026);
    CHECK(beyond_s <= 0.031);
    CHECK(lsb_i <= 1.8);
    CHECK(lsb_s <= 1.9);
    CHECK(range_rel <= 0.008);
  }

  TEST_CASE("the int8 output table equals the formula") {
    const auto p = prepare_gelu<ShiftGelu>(0.05f, 0.04f);
    for (int x = -128; x < 128; ++x)
      CHECK(p.int8_table[static_cast<std::size_t>(x + 128)] == detail::gelu_int_scalar(p, x));
  }

  TEST_CASE("the ShiftGelu int32 output table equals the formula at every x_p") {
    for (float s : {1e-5f, 1e-4f, 1e-3f, 0.05f}) {
      CAPTURE(s);
      const auto p = prepare_gelu<ShiftGelu, std::int32_t>(s, 0.05f);
      REQUIRE(p.int32_table.size() == detail::kGeluInt32TableSize);
      const std::int32_t lo = p.in_min >> p.pre_shift, hi = p.in_max >> p.pre_shift;
      CHECK(lo >= -32768);
      CHECK(hi <= 32767);
      Index bad = 0;
      for (std::int32_t xp = lo; xp <= hi; ++xp) {
        const std::int32_t x = static_cast<std::int32_t>(std::int64_t{xp} << p.pre_shift);
        bad += p.int32_table[static_cast<std::size_t>(xp + 32768)] != detail::gelu_int_scalar(p, x);
      }
      CHECK(bad == 0);
    }
    CHECK(prepare_gelu<IGelu, std::int32_t>(1e-4f, 0.05f).int32_table.empty());
  }

  TEST_CASE_TEMPLATE("every GELU SIMD path equals the scalar reference bit for bit", Arch,
                     VITC_KERNEL_ARCH_TAGS) {
    if (!vitc_test::arch_runs<Arch>()) return;
    std::mt19937 rng(77);
    auto check_all = [&](auto params, auto sample) {
      using In = decltype(sample);
      for (Index cols : {0, 1, 7, 8, 15, 16, 17, 31, 32, 33, 64, 197, 768, 3073}) {
        const Index rows = cols > 1000 ? 2 : 5;
        for (int mode = 0; mode < 5; ++mode) {
          Strided<In> x(rows, cols, 3, 1);
          for (Index r = 0; r < rows; ++r) {
            for (Index c = 0; c < cols; ++c) {
              In v{};
              switch (mode) {
                case 0:
                  v = static_cast<In>(rng());
                  break;
                case 1:
                  v = std::numeric_limits<In>::min();
                  break;
                case 2:
                  v = std::numeric_limits<In>::max();
                  break;
                case 3:
                  v = static_cast<In>(static_cast<std::int32_t>(rng()) >> (rng() % 32));
                  break;
                default:
                  v = static_cast<In>(static_cast<std::int32_t>(r * cols + c) - 128);
                  break;
              }
              x.row(r)[c] = v;
            }
          }
          Strided<std::int8_t> ref(rows, cols, 5, 3, 0x5A), got(rows, cols, 5, 3, 0x5A);
          gelu_int<arch::Scalar>(params, x.cview(), ref.view());
          gelu_int<Arch>(params, x.cview(), got.view());
          const Index bad = vitc_test::first_mismatch(ref, got);
          if (bad >= 0) {
            CAPTURE(cols);
            CAPTURE(mode);
            CAPTURE(bad);
            CHECK(bad < 0);
          }
          CHECK(got.storage == ref.storage);
        }
      }
    };
    for (float s : {0.08f, 0.01f, 1e-4f}) {
      CAPTURE(s);
      check_all(prepare_gelu<IGelu, std::int8_t>(s, 0.05f), std::int8_t{});
      check_all(prepare_gelu<ShiftGelu, std::int8_t>(s, 0.05f), std::int8_t{});
      check_all(prepare_gelu<IGelu, std::int32_t>(s * 1e-3f, 0.05f), std::int32_t{});
      check_all(prepare_gelu<ShiftGelu, std::int32_t>(s * 1e-3f, 0.05f), std::int32_t{});
      check_all(prepare_gelu<IGelu, std::int32_t>(s, 0.5f), std::int32_t{});
      // Without its int32 output table, ShiftGelu runs the 32-bit-lane formula on every path.
      auto formula = prepare_gelu<ShiftGelu, std::int32_t>(s * 1e-3f, 0.05f);
      formula.int32_table.clear();
      check_all(formula, std::int32_t{});
    }
  }

  TEST_CASE("gelu_int checks shapes and strides, and threads give the same result") {
    const auto p = prepare_gelu<IGelu>(0.05f, 0.04f);
    Strided<std::int8_t> x(4, 8, 0, 0);
    Strided<std::int8_t> y(4, 7, 0, 0);
    CHECK_THROWS_AS(gelu_int(p, x.cview(), y.view()), vitc::ShapeError);
    Strided<std::int8_t> y2(4, 8, 0, 0);
    vitc::TensorView<const std::int8_t, 2> xt(x.storage.data(), {4, 8}, {1, 4});
    CHECK_THROWS_AS(gelu_int(p, xt, y2.view()), vitc::ArgumentError);
    std::mt19937 rng(5);
    Strided<std::int8_t> big(197, 768, 0, 0);
    for (auto& v : big.storage) v = static_cast<std::int8_t>(rng());
    Strided<std::int8_t> a(197, 768, 0, 0), b(197, 768, 0, 0);
    gelu_int(p, big.cview(), a.view());
    vitc::ThreadPool pool(2);
    gelu_int(p, big.cview(), b.view(), pool);
    CHECK(a.storage == b.storage);
  }
}
