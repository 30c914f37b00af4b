// SPDX-License-Identifier: Apache-2.0
// The AVX-512 and AVX2 output pipelines against the scalar stages, on accumulators and
// fixed-point parameters chosen to hit every branch: the fast single-rounding form (shifts 0..31,
// any multiplier but INT32_MIN, products near ±2^62, ties), the general form (left shifts,
// INT32_MIN), blocks mixing both, and tails shorter than a vector.
#include <doctest/doctest.h>

#include <cstdint>
#include <limits>
#include <random>
#include <tuple>
#include <vector>

#include "vitcompress/kernels/arch.hpp"
#include "vitcompress/kernels/detail/output_stage_simd.hpp"
#include "vitcompress/kernels/output_stage.hpp"

#if VITC_HAVE_X86_TARGET_KERNELS

// Named, not anonymous: the test family builds as one unity TU.
namespace output_stage_simd_test {

using vitc::Index;
namespace kn = vitc::kernels;
namespace arch = vitc::kernels::arch;

constexpr std::int32_t kMin = std::numeric_limits<std::int32_t>::min();
constexpr std::int32_t kMax = std::numeric_limits<std::int32_t>::max();

// Accumulators: extremes, values around ±2^k, ties of the fixed-point rounding, random.
std::vector<std::int32_t> accumulators(std::mt19937& rng, std::size_t count) {
  std::vector<std::int32_t> v = {0, 1, -1, kMin, kMax, kMin + 1, kMax - 1, 1 << 30, -(1 << 30)};
  for (int k = 1; k < 31; ++k) {
    const std::int32_t p = 1 << k;
    for (std::int32_t d : {-1, 0, 1}) {
      v.push_back(p + d);
      v.push_back(-p + d);
      v.push_back(p / 2 * 3 + d);  // 1.5·2^k: a tie for many shifts
      v.push_back(-(p / 2 * 3) + d);
    }
  }
  std::uniform_int_distribution<std::int32_t> any(kMin, kMax);
  std::uniform_int_distribution<std::int32_t> small(-100000, 100000);
  while (v.size() < count) v.push_back(v.size() % 2 ? any(rng) : small(rng));
  v.resize(count);
  return v;
}

// Per-column parameters for `n` columns of one of three kinds.
enum class Params { kFast, kGeneral, kMixed };
std::vector<kn::FixedPointMultiplier> multipliers(std::mt19937& rng, Index n, Params kind) {
  std::uniform_int_distribution<std::int32_t> any_m(kMin + 1, kMax);
  std::uniform_int_distribution<std::int32_t> fast_s(0, 31), any_s(-31, 31);
  std::vector<kn::FixedPointMultiplier> out(static_cast<std::size_t>(n));
  for (std::size_t j = 0; j < out.size(); ++j) {
    kn::FixedPointMultiplier& m = out[j];
    m = {any_m(rng), fast_s(rng)};
    if (j % 6 == 0) m.multiplier = kMax;  // products up to 2^62
    if (j % 6 == 1) m.multiplier = kMin + 1;
    if (j % 6 == 2) m.multiplier = 1 << 30;  // SRDHM = x / 2, ties for odd x
    if (j % 9 == 3) m.shift = 0;
    if (j % 9 == 4) m.shift = 31;
    if (kind == Params::kGeneral || (kind == Params::kMixed && j % 16 == 7)) {
      m.shift = j % 2 ? any_s(rng) : -static_cast<std::int32_t>(1 + j % 31);
      if (j % 5 == 0) m.multiplier = kMin;
    }
  }
  return out;
}

// The evaluators are always-inline with target attributes: callers need the same target.
template <class Pipeline, class OutT>
VITC_TARGET_AVX512VNNI void run_512(const Pipeline& p, const std::int32_t* acc, Index rows,
                                    Index cols, OutT* dst) {
  kn::detail::apply_pipeline_tile_512(p, acc, cols, rows, 0, cols, dst, cols);
}
template <class Pipeline, class OutT>
VITC_TARGET_AVX2 void run_256(const Pipeline& p, const std::int32_t* acc, Index rows, Index cols,
                              OutT* dst) {
  kn::detail::apply_pipeline_tile_256(p, acc, cols, rows, 0, cols, dst, cols);
}

template <int kWidth, class Pipeline, class OutT>
void check_tile(const Pipeline& pipeline, const std::vector<std::int32_t>& acc, Index rows,
                Index cols) {
  std::vector<OutT> want(acc.size()), got(acc.size());
  for (Index r = 0; r < rows; ++r)
    for (Index j = 0; j < cols; ++j)
      want[static_cast<std::size_t>(r * cols + j)] =
          kn::eval_pipeline(pipeline, acc[static_cast<std::size_t>(r * cols + j)], j);
  if constexpr (kWidth == 512)
    run_512(pipeline, acc.data(), rows, cols, got.data());
  else
    run_256(pipeline, acc.data(), rows, cols, got.data());
  Index mismatches = 0;
  for (std::size_t i = 0; i < want.size(); ++i)
    if (want[i] != got[i]) {
      if (mismatches++ < 5)
        MESSAGE("column " << i % static_cast<std::size_t>(cols) << " acc " << acc[i] << ": want "
                          << static_cast<std::int64_t>(want[i]) << " got "
                          << static_cast<std::int64_t>(got[i]));
    }
  CHECK(mismatches == 0);
}

template <int kWidth>
void check_width() {
  std::mt19937 rng(11);
  for (Index cols : {Index{1}, Index{7}, Index{16}, Index{37}, Index{192}}) {
    CAPTURE(cols);
    const Index rows = 64;
    const auto acc = accumulators(rng, static_cast<std::size_t>(rows * cols));
    std::vector<std::int32_t> bias(static_cast<std::size_t>(cols));
    std::uniform_int_distribution<std::int32_t> bd(-5000, 5000);
    for (auto& b : bias) b = bd(rng);
    for (Params kind : {Params::kFast, Params::kGeneral, Params::kMixed}) {
      CAPTURE(static_cast<int>(kind));
      const auto mults = multipliers(rng, cols, kind);
      using Raw = std::tuple<kn::OutputRequantizePerChannel>;
      check_tile<kWidth, Raw, std::int32_t>(Raw{{mults}}, acc, rows, cols);
      using Q8 = std::tuple<kn::OutputBiasAdd, kn::OutputRequantizePerChannel,
                            kn::OutputAddZeroPoint, kn::OutputSaturatingCast<std::int8_t>>;
      check_tile<kWidth, Q8, std::int8_t>(Q8{{bias}, {mults}, {-3}, {}}, acc, rows, cols);
      using Q16 = std::tuple<kn::OutputRequantizePerChannel, kn::OutputClamp,
                             kn::OutputSaturatingCast<std::int16_t>>;
      check_tile<kWidth, Q16, std::int16_t>(Q16{{mults}, {-40000, 30000}, {}}, acc, rows, cols);
      // Per-tensor: each column's parameters in turn.
      using T8 = std::tuple<kn::OutputRequantize, kn::OutputSaturatingCast<std::uint8_t>>;
      for (std::size_t j = 0; j < mults.size() && j < 24; ++j) {
        CAPTURE(mults[j].multiplier);
        CAPTURE(mults[j].shift);
        check_tile<kWidth, std::tuple<kn::OutputRequantize>, std::int32_t>(
            std::tuple<kn::OutputRequantize>{{mults[j]}}, acc, rows, cols);
        check_tile<kWidth, T8, std::uint8_t>(T8{{mults[j]}, {}}, acc, rows, cols);
      }
    }
  }
}

TEST_SUITE("kernels") {
  TEST_CASE("output stages: AVX-512 fast and general fixed-point forms equal the scalar stages") {
    if (!arch::Avx512Vnni::available()) {
      MESSAGE("path not available on this CPU: " << arch::Avx512Vnni::kName);
      return;
    }
    check_width<512>();
  }
  TEST_CASE("output stages: AVX2 fast and general fixed-point forms equal the scalar stages") {
    if (!arch::Avx2::available()) {
      MESSAGE("path not available on this CPU: " << arch::Avx2::kName);
      return;
    }
    check_width<256>();
  }
}

}  // namespace output_stage_simd_test

#endif  // VITC_HAVE_X86_TARGET_KERNELS
