// SPDX-License-Identifier: Apache-2.0
// apply_output_pipeline on every arch path against eval_pipeline, element by element, on strided
// views, extreme accumulators and odd shapes; and its argument checks.
#include <doctest/doctest.h>

#include <cstdint>
#include <limits>
#include <random>
#include <tuple>
#include <vector>

#include "nonlinear_test_util.hpp"
#include "vitcompress/kernels/apply_output_pipeline.hpp"
#include "vitcompress/kernels/fixed_point.hpp"

namespace apply_output_pipeline_test {

using vitc::Index;
namespace kn = vitc::kernels;

template <class Arch, class Pipeline, class OutT>
void check(const Pipeline& pipeline, Index rows, Index cols, std::mt19937& rng) {
  const Index lda = cols + 3, ldo = cols + 5;
  std::vector<std::int32_t> acc(static_cast<std::size_t>(std::max<Index>(rows * lda, 1)));
  std::uniform_int_distribution<std::int32_t> any(std::numeric_limits<std::int32_t>::min(),
                                                  std::numeric_limits<std::int32_t>::max());
  std::uniform_int_distribution<std::int32_t> small(-300000, 300000);
  for (std::size_t i = 0; i < acc.size(); ++i) acc[i] = i % 7 == 0 ? any(rng) : small(rng);
  if (!acc.empty()) acc[0] = std::numeric_limits<std::int32_t>::min();
  if (acc.size() > 1) acc[1] = std::numeric_limits<std::int32_t>::max();
  const OutT sentinel = static_cast<OutT>(0x5A);
  std::vector<OutT> out(static_cast<std::size_t>(std::max<Index>(rows * ldo, 1)), sentinel);
  kn::apply_output_pipeline<Arch>(
      pipeline, vitc::TensorView<const std::int32_t, 2>(acc.data(), {rows, cols}, {lda, 1}),
      vitc::TensorView<OutT, 2>(out.data(), {rows, cols}, {ldo, 1}));
  Index bad = 0;
  for (Index r = 0; r < rows; ++r)
    for (Index j = 0; j < ldo; ++j) {
      const OutT got = out[static_cast<std::size_t>(r * ldo + j)];
      const OutT want =
          j < cols ? kn::eval_pipeline(pipeline, acc[static_cast<std::size_t>(r * lda + j)], j)
                   : sentinel;  // padding between rows is not written
      bad += got != want;
    }
  CAPTURE(rows);
  CAPTURE(cols);
  CHECK(bad == 0);
}

}  // namespace apply_output_pipeline_test

TEST_SUITE("kernels") {
  TEST_CASE_TEMPLATE("apply_output_pipeline equals eval_pipeline on every path", Arch,
                     VITC_KERNEL_ARCH_TAGS) {
    using namespace apply_output_pipeline_test;
    if (!vitc_test::arch_runs<Arch>()) return;
    std::mt19937 rng(5);
    for (Index cols : {Index{0}, Index{1}, Index{7}, Index{16}, Index{17}, Index{64}, Index{197}}) {
      for (Index rows : {Index{0}, Index{1}, Index{13}}) {
        std::vector<kn::FixedPointMultiplier> mults;
        std::vector<std::int32_t> bias;
        for (Index j = 0; j < cols; ++j) {
          mults.push_back(kn::fixed_point_from_scale(0.37 / (1.0 + static_cast<double>(j % 5)),
                                                     "test multiplier"));
          bias.push_back(static_cast<std::int32_t>(j * 37 % 2001) - 1000);
        }
        const kn::FixedPointMultiplier one = kn::fixed_point_from_scale(3.1e-4, "test");
        using U8 = std::tuple<kn::OutputRequantize, kn::OutputAddZeroPoint,
                              kn::OutputSaturatingCast<std::uint8_t>>;
        check<Arch, U8, std::uint8_t>(U8{{one}, {131}, {}}, rows, cols, rng);
        using I8 = std::tuple<kn::OutputBiasAdd, kn::OutputRequantizePerChannel, kn::OutputClamp,
                              kn::OutputSaturatingCast<std::int8_t>>;
        check<Arch, I8, std::int8_t>(I8{{bias}, {mults}, {-100, 90}, {}}, rows, cols, rng);
        using F = std::tuple<kn::OutputDequantize>;
        check<Arch, F, float>(F{{0.125f}}, rows, cols, rng);
      }
    }
  }

  TEST_CASE("apply_output_pipeline rejects shapes, strides and short stages") {
    using namespace apply_output_pipeline_test;
    using U8 = std::tuple<kn::OutputRequantize, kn::OutputSaturatingCast<std::uint8_t>>;
    const U8 pipe{{kn::fixed_point_from_scale(0.5, "test")}, {}};
    std::vector<std::int32_t> acc(12);
    std::vector<std::uint8_t> out(12);
    const vitc::TensorView<const std::int32_t, 2> a(acc.data(), {3, 4});
    CHECK_THROWS_AS(
        kn::apply_output_pipeline(pipe, a, vitc::TensorView<std::uint8_t, 2>(out.data(), {4, 3})),
        vitc::ShapeError);
    CHECK_THROWS_AS(kn::apply_output_pipeline(
                        pipe, a, vitc::TensorView<std::uint8_t, 2>(out.data(), {3, 4}, {1, 3})),
                    vitc::ArgumentError);
    std::vector<std::int32_t> short_bias(3, 0);
    const std::tuple<kn::OutputBiasAdd, kn::OutputSaturatingCast<std::uint8_t>> biased{{short_bias},
                                                                                       {}};
    CHECK_THROWS_AS(
        kn::apply_output_pipeline(biased, a, vitc::TensorView<std::uint8_t, 2>(out.data(), {3, 4})),
        vitc::ArgumentError);
  }
}
