// SPDX-License-Identifier: Apache-2.0
// The engine's residual rescaling (engine::detail::rescale_row and its AVX2 / AVX-512 paths):
// out = clamp(⌊(acc·a1 + x·a2 + k + 2^(e−1)) / 2^e⌋, lo, hi), or with extra in place of x·a2. The
// SIMD paths against the scalar formula on random and extreme constants and operands, every width
// up to 40, in place (x = out), and without writing past n.
#include <doctest/doctest.h>

#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "vitcompress/engine/detail/int_vit_ops.hpp"
#include "vitcompress/kernels/arch.hpp"

namespace rescale_row_test {

using vitc::Index;
using vitc::engine::detail::Rescale;

// n channels of constants within make_rescale's bounds (a1, a2 <= 2^30, |k| <= 2^61, e in
// [1, 62]), with the extremes of each among them.
Rescale constants(Index n, std::int32_t lo, std::int32_t hi, std::mt19937_64& rng) {
  Rescale r;
  r.lo = lo;
  r.hi = hi;
  const std::int64_t a_max = std::int64_t{1} << 30, k_max = std::int64_t{1} << 61;
  std::uniform_int_distribution<std::int64_t> a(0, a_max), k(-k_max, k_max),
      k_small(-(std::int64_t{1} << 40), std::int64_t{1} << 40);
  std::uniform_int_distribution<std::int32_t> e(1, 62), e_mid(20, 40);
  for (Index c = 0; c < n; ++c) {
    switch (c % 4) {
      case 0:  // typical: results land inside [lo, hi] often
        r.a1.push_back(a(rng) >> 20);
        r.a2.push_back(a(rng) >> 20);
        r.k.push_back(k_small(rng) >> 20);
        r.e.push_back(e_mid(rng) / 2);
        break;
      case 1:
        r.a1.push_back(a(rng));
        r.a2.push_back(a(rng));
        r.k.push_back(k(rng));
        r.e.push_back(e(rng));
        break;
      case 2:  // extremes
        r.a1.push_back(a_max);
        r.a2.push_back(c % 8 == 2 ? a_max : 0);
        r.k.push_back(c % 8 == 2 ? k_max : -k_max);
        r.e.push_back(c % 8 == 2 ? 62 : 1);
        break;
      default:
        r.a1.push_back(a(rng) >> 10);
        r.a2.push_back(a(rng) >> 15);
        r.k.push_back(k_small(rng));
        r.e.push_back(e_mid(rng));
        break;
    }
  }
  r.avx2_exact = vitc::engine::detail::rescale_avx2_exact(r);
  return r;
}

constexpr std::int16_t kGuard = 0x5A5A;  // after the n outputs: must stay

template <class Path>
void check_path(Path path) {
  std::mt19937_64 rng(5);
  std::uniform_int_distribution<std::int32_t> acc_d(std::numeric_limits<std::int32_t>::min(),
                                                    std::numeric_limits<std::int32_t>::max()),
      acc_small(-100000, 100000);
  std::uniform_int_distribution<int> x_d(-32768, 32767);
  // |acc·a1|, |k|, |extra| and the rounding half each at most 2^61 (2^60 for extra): no overflow.
  std::uniform_int_distribution<std::int64_t> extra_d(-(std::int64_t{1} << 60),
                                                      std::int64_t{1} << 60);
  int compared = 0;
  for (const auto& [lo, hi] : {std::pair{-255, 255}, std::pair{-32768, 32767}, std::pair{0, 0}})
    for (Index n = 0; n <= 40; ++n)
      for (int mode = 0; mode < 4; ++mode) {  // x, extra, neither, x in place
        CAPTURE(lo);
        CAPTURE(n);
        CAPTURE(mode);
        const Rescale r = constants(n, lo, hi, rng);
        std::vector<std::int32_t> acc(static_cast<std::size_t>(n));
        std::vector<std::int16_t> x(static_cast<std::size_t>(n));
        std::vector<std::int64_t> extra(static_cast<std::size_t>(n));
        for (Index c = 0; c < n; ++c) {
          const auto i = static_cast<std::size_t>(c);
          acc[i] = c % 5 == 0   ? std::numeric_limits<std::int32_t>::min()
                   : c % 5 == 1 ? std::numeric_limits<std::int32_t>::max()
                   : c % 5 == 2 ? acc_d(rng)
                                : acc_small(rng);
          x[i] = static_cast<std::int16_t>(c % 7 == 0 ? -32768 : c % 7 == 1 ? 32767 : x_d(rng));
          extra[i] = extra_d(rng);
        }
        const std::int16_t* xp = mode == 0 || mode == 3 ? x.data() : nullptr;
        const std::int64_t* ep = mode == 1 ? extra.data() : nullptr;
        std::vector<std::int16_t> want(static_cast<std::size_t>(n) + 8, kGuard);
        std::vector<std::int16_t> got = want;
        vitc::engine::detail::rescale_row(r, acc.data(), xp, ep, want.data(), n);
        if (mode == 3) {  // in place: x is the output
          got.assign(x.begin(), x.end());
          got.resize(static_cast<std::size_t>(n) + 8, kGuard);
          path(r, acc.data(), got.data(), nullptr, got.data(), n);
        } else {
          path(r, acc.data(), xp, ep, got.data(), n);
        }
        CHECK(got == want);
        ++compared;
      }
  CHECK(compared == 3 * 41 * 4);
}

#if VITC_HAVE_X86_TARGET_KERNELS
// rescale_rows_avx512 against rescale_row row by row: row counts around its tiles of 16, channel
// counts around 8, padded row strides (the padding must stay), in place and not, the three output
// ranges of check_path.
void check_rows_avx512() {
  std::mt19937_64 rng(11);
  std::uniform_int_distribution<std::int32_t> acc_d(std::numeric_limits<std::int32_t>::min(),
                                                    std::numeric_limits<std::int32_t>::max());
  std::uniform_int_distribution<int> x_d(-32768, 32767);
  int compared = 0;
  for (const auto& [lo, hi] : {std::pair{-255, 255}, std::pair{-32768, 32767}, std::pair{0, 0}})
    for (Index rows : {0, 1, 2, 7, 9, 16, 17, 33})
      for (Index n : {0, 1, 7, 8, 9, 16, 17, 40})
        for (bool in_place : {false, true}) {
          CAPTURE(lo);
          CAPTURE(rows);
          CAPTURE(n);
          CAPTURE(in_place);
          const Rescale r = constants(n, lo, hi, rng);
          const Index lda = n + 3, ldx = n + 5, ldo = in_place ? ldx : n + 1;
          std::vector<std::int32_t> acc(static_cast<std::size_t>(rows * lda));
          std::vector<std::int16_t> x(static_cast<std::size_t>(rows * ldx));
          for (std::size_t i = 0; i < acc.size(); ++i)
            acc[i] = i % 5 == 0   ? std::numeric_limits<std::int32_t>::min()
                     : i % 5 == 1 ? std::numeric_limits<std::int32_t>::max()
                                  : acc_d(rng) >> (i % 3 == 0 ? 12 : 0);
          for (std::size_t i = 0; i < x.size(); ++i)
            x[i] = static_cast<std::int16_t>(i % 7 == 0 ? -32768 : i % 7 == 1 ? 32767 : x_d(rng));
          std::vector<std::int16_t> want(static_cast<std::size_t>(rows * ldo), kGuard);
          if (in_place) want = x;
          for (Index i = 0; i < rows; ++i)
            vitc::engine::detail::rescale_row(r, acc.data() + i * lda, x.data() + i * ldx, nullptr,
                                              want.data() + i * ldo, n);
          std::vector<std::int16_t> got(static_cast<std::size_t>(rows * ldo), kGuard);
          if (in_place) got = x;
          std::int16_t* xp = in_place ? got.data() : x.data();
          vitc::engine::detail::rescale_rows_avx512(r, acc.data(), lda, xp, ldx, got.data(), ldo,
                                                    rows, n);
          CHECK(got == want);
          ++compared;
        }
  CHECK(compared == 3 * 8 * 8 * 2);
}
#endif

}  // namespace rescale_row_test

TEST_SUITE("engine") {
  using namespace rescale_row_test;

  TEST_CASE("rescale_row: the AVX2 and AVX-512 paths equal the scalar formula") {
#if VITC_HAVE_X86_TARGET_KERNELS
    if (vitc::kernels::arch::Avx2::available())
      check_path([](const Rescale& r, const std::int32_t* acc, const std::int16_t* x,
                    const std::int64_t* extra, std::int16_t* out,
                    Index n) { vitc::engine::detail::rescale_row_avx2(r, acc, x, extra, out, n); });
    else
      MESSAGE("AVX2 not available on this CPU");
    if (vitc::kernels::arch::Avx512Vnni::available())
      check_path([](const Rescale& r, const std::int32_t* acc, const std::int16_t* x,
                    const std::int64_t* extra, std::int16_t* out, Index n) {
        vitc::engine::detail::rescale_row_avx512(r, acc, x, extra, out, n);
      });
    else
      MESSAGE("AVX-512 not available on this CPU");
    if (vitc::kernels::arch::Avx512Vnni::available()) check_rows_avx512();
#else
    MESSAGE("no x86 SIMD paths in this build");
#endif
  }

  TEST_CASE("rescale_row: constants the AVX2 path cannot take fall back to the scalar formula") {
    std::mt19937_64 rng(9);
    Rescale r = constants(16, -255, 255, rng);
    CHECK(r.avx2_exact);
    r.a1[3] = std::int64_t{1} << 31;  // beyond vpmuldq's 32-bit factor
    CHECK_FALSE(vitc::engine::detail::rescale_avx2_exact(r));
    r.a1[3] = 1;
    r.hi = 40000;  // beyond int16: saturating narrowing would differ from the scalar cast
    CHECK_FALSE(vitc::engine::detail::rescale_avx2_exact(r));
#if VITC_HAVE_X86_TARGET_KERNELS
    if (vitc::kernels::arch::Avx2::available()) {
      r.hi = 255;
      r.a1[3] = std::int64_t{1} << 31;
      r.avx2_exact = vitc::engine::detail::rescale_avx2_exact(r);
      std::vector<std::int32_t> acc(16, 1 << 20);
      std::vector<std::int16_t> want(16), got(16);
      vitc::engine::detail::rescale_row(r, acc.data(), nullptr, nullptr, want.data(), 16);
      vitc::engine::detail::rescale_row_avx2(r, acc.data(), nullptr, nullptr, got.data(), 16);
      CHECK(got == want);
    }
#endif
  }
}
