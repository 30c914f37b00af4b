// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "vitcompress/core/parallel_for.hpp"
#include "vitcompress/core/tensor.hpp"
#include "vitcompress/kernels/arch.hpp"
#include "vitcompress/kernels/gemm_f32.hpp"
#include "vitcompress/kernels/packed_weights_f32.hpp"

namespace gemm_f32_test {

using vitc::Index;
using vitc::Tensor;
using vitc::TensorView;
namespace kn = vitc::kernels;
namespace arch = vitc::kernels::arch;

#if XSIMD_WITH_AVX512BW
#define GEMM_F32_TEST_TAGS \
  VITC_KERNEL_ARCH_TAGS, arch::Xsimd<xsimd::avx2>, arch::Xsimd<xsimd::sse4_2>
#else
#define GEMM_F32_TEST_TAGS VITC_KERNEL_ARCH_TAGS
#endif

enum class Fill { kNormal, kExtreme, kSmallInts };

// Values with every kind of IEEE trouble: huge (products overflow to inf), subnormal, signed
// zeros, and ordinary values of mixed sign and scale (cancellation).
inline float extreme_value(std::mt19937& rng) {
  static const float kValues[] = {0.0F,     -0.0F,    1.0F,      -1.0F,    3.0e38F,
                                  -3.0e38F, 1.0e-40F, -1.0e-40F, 1.0e-30F, 7.5e19F,
                                  -7.5e19F, 0.1F,     -1.0e10F,  65504.0F};
  std::uniform_int_distribution<int> pick(0, static_cast<int>(std::size(kValues)) - 1 + 4);
  const int i = pick(rng);
  if (i < static_cast<int>(std::size(kValues))) return kValues[i];
  return std::normal_distribution<float>(0.0F, 1.0e3F)(rng);
}

inline void fill_matrix(float* data, Index rows, Index cols, Index ld, Fill how,
                        std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0F, 1.0F);
  std::uniform_int_distribution<int> small(-8, 8);
  for (Index i = 0; i < rows; ++i)
    for (Index j = 0; j < cols; ++j) {
      float v = 0;
      switch (how) {
        case Fill::kNormal:
          v = normal(rng);
          break;
        case Fill::kExtreme:
          v = extreme_value(rng);
          break;
        case Fill::kSmallInts:
          v = static_cast<float>(small(rng));
          break;
      }
      data[i * ld + j] = v;
    }
}

// The definition, from the unpacked B: fma over k in order from +0, then + bias, then + residual.
inline float reference(const float* a, Index lda, const float* b, Index ldb, Index k, Index i,
                       Index j, const float* bias, const float* res, Index ldr) {
  float acc = 0.0F;
  for (Index t = 0; t < k; ++t) acc = std::fma(a[i * lda + t], b[t * ldb + j], acc);
  if (bias != nullptr) acc = acc + bias[j];
  if (res != nullptr) acc = acc + res[i * ldr + j];
  return acc;
}

// Bitwise equal, or both NaN (NaN payloads may legitimately differ between instructions).
inline bool same_bits(float x, float y) {
  return (std::isnan(x) && std::isnan(y)) ||
         std::bit_cast<std::uint32_t>(x) == std::bit_cast<std::uint32_t>(y);
}

struct Case {
  Index m, k, n;
  bool bias, residual, in_place;
  Fill fill;
};

template <class Tag, class Policy>
void check_case(const Case& cs, std::mt19937& rng, Policy&& policy, Index a_offset,
                Index c_offset) {
  const Index m = cs.m, k = cs.k, n = cs.n;
  const Index lda = k + 3, ldc = n + 5;
  std::vector<float> a_buf(static_cast<std::size_t>(a_offset + m * lda + 1));
  std::vector<float> b_buf(static_cast<std::size_t>(k * n + 1));
  std::vector<float> c_buf(static_cast<std::size_t>(c_offset + m * ldc + 1), -777.0F);
  std::vector<float> bias(static_cast<std::size_t>(n + 1)),
      res(static_cast<std::size_t>(m * ldc + 1));
  float* a = a_buf.data() + a_offset;
  float* c = c_buf.data() + c_offset;
  fill_matrix(a, m, k, lda, cs.fill, rng);
  fill_matrix(b_buf.data(), k, n, n, cs.fill, rng);
  fill_matrix(bias.data(), 1, n, n, cs.fill, rng);
  fill_matrix(res.data(), m, n, ldc, cs.fill, rng);
  // Packed into a deliberately misaligned buffer (+1 float).
  std::vector<float> packed(static_cast<std::size_t>(kn::packed_f32_floats(k, n) + 1));
  const kn::PackedPanelsF32 pb =
      kn::pack_b_f32(TensorView<const float, 2>(b_buf.data(), {k, n}, {n, 1}), packed.data() + 1);
  for (Index t = 0; t < k; t += std::max<Index>(1, k / 7))
    for (Index j = 0; j < n; ++j)
      REQUIRE(pb.at(t, j) == b_buf[static_cast<std::size_t>(t * n + j)]);

  if (cs.in_place)
    for (Index i = 0; i < m; ++i)
      for (Index j = 0; j < n; ++j) c[i * ldc + j] = res[static_cast<std::size_t>(i * ldc + j)];
  kn::GemmF32Epilogue ep;
  if (cs.bias) ep.bias = TensorView<const float, 1>(bias.data(), {n}, {1});
  if (cs.residual || cs.in_place)
    ep.residual = TensorView<const float, 2>(cs.in_place ? c : res.data(), {m, n}, {ldc, 1});
  kn::gemm_f32<Tag>(TensorView<const float, 2>(a, {m, k}, {lda, 1}), pb,
                    TensorView<float, 2>(c, {m, n}, {ldc, 1}), ep, policy);

  const float* rp = (cs.residual || cs.in_place) ? res.data() : nullptr;
  Index bad = 0;
  for (Index i = 0; i < m; ++i) {
    for (Index j = 0; j < n; ++j) {
      const float want =
          reference(a, lda, b_buf.data(), n, k, i, j, cs.bias ? bias.data() : nullptr, rp, ldc);
      if (!same_bits(c[i * ldc + j], want) && bad++ < 3)
        FAIL_CHECK("C[" << i << "][" << j << "] = " << c[i * ldc + j] << ", want " << want
                        << " (m=" << m << " k=" << k << " n=" << n << ")");
    }
    // Padding between rows untouched.
    for (Index j = n; j < ldc && i + 1 < m; ++j) REQUIRE(c[i * ldc + j] == -777.0F);
  }
  CHECK(bad == 0);
  REQUIRE(c_buf[static_cast<std::size_t>(c_offset + m * ldc)] == -777.0F);
}

TEST_SUITE("kernels") {
  TEST_CASE_TEMPLATE("gemm_f32: every path equals the fma-in-order definition bit for bit", Tag,
                     GEMM_F32_TEST_TAGS) {
    if (!Tag::available()) {
      MESSAGE("path " << Tag::kName << " not available on this CPU: skipped");
      return;
    }
    std::mt19937 rng(20261123);
    const std::vector<std::tuple<Index, Index, Index>> shapes = {
        {1, 1, 1},     {1, 7, 1},    {3, 5, 17},    {8, 16, 48},   {9, 33, 49},
        {17, 96, 288}, {13, 24, 17}, {25, 100, 95}, {2, 4096, 20}, {7, 1, 130},
        {1, 3072, 41}, {41, 64, 64}, {19, 2500, 70}};
    for (const auto& [m, k, n] : shapes)
      for (Fill f : {Fill::kNormal, Fill::kExtreme, Fill::kSmallInts})
        for (int variant = 0; variant < 3; ++variant) {
          const Case cs{m, k, n, variant >= 1, variant == 1, variant == 2, f};
          check_case<Tag>(cs, rng, vitc::Sequential{}, variant, (variant + 1) % 2);
        }
  }

  TEST_CASE_TEMPLATE("gemm_f32: zero sizes write nothing; K = 0 gives bias + residual", Tag,
                     GEMM_F32_TEST_TAGS) {
    if (!Tag::available()) return;
    std::mt19937 rng(7);
    for (const auto& [m, k, n] :
         std::vector<std::tuple<Index, Index, Index>>{{0, 5, 7}, {4, 5, 0}, {0, 0, 0}, {3, 0, 19}})
      for (int variant = 0; variant < 3; ++variant)
        check_case<Tag>(Case{m, k, n, variant >= 1, variant == 1, variant == 2, Fill::kNormal}, rng,
                        vitc::Sequential{}, 1, 0);
  }

  TEST_CASE_TEMPLATE("gemm_f32: two threads give the same bits as one", Tag, GEMM_F32_TEST_TAGS) {
    if (!Tag::available()) return;
    vitc::ThreadPool pool(2);
    for (const auto& [m, k, n] : std::vector<std::tuple<Index, Index, Index>>{
             {65, 192, 576}, {197, 64, 197}, {5, 768, 1000}}) {
      std::mt19937 rng(11);
      check_case<Tag>(Case{m, k, n, true, true, false, Fill::kNormal}, rng, pool, 0, 0);
    }
  }

  TEST_CASE("gemm_f32: strided and transposed A, packing from an [out, in] weight") {
    std::mt19937 rng(3);
    const Index m = 11, k = 37, n = 29;
    Tensor<float, 2> at({k, m}), w({n, k});  // A stored transposed; W = Bᵀ
    fill_matrix(at.data(), k, m, m, Fill::kNormal, rng);
    fill_matrix(w.data(), n, k, k, Fill::kNormal, rng);
    const kn::PackedWeightsF32 pw = kn::PackedWeightsF32::from_out_in(w.cview());
    CHECK(pw.depth() == k);
    CHECK(pw.cols() == n);
    CHECK(pw.bytes() == 2 * 16 * k * 4);
    const kn::PackedWeightsF32 copy = pw;  // copies own their panels
    Tensor<float, 2> c1({m, n}), c2({m, n});
    kn::GemmF32Workspace ws;
    kn::gemm_f32<arch::Scalar>(at.cview().transposed(), copy, c1.view(), {}, vitc::Sequential{},
                               &ws);
    kn::gemm_f32(at.cview().transposed(), pw, c2.view());
    for (Index i = 0; i < m; ++i)
      for (Index j = 0; j < n; ++j) {
        float acc = 0.0F;
        for (Index t = 0; t < k; ++t) acc = std::fma(at(t, i), w(j, t), acc);
        REQUIRE(same_bits(c1(i, j), acc));
        REQUIRE(same_bits(c2(i, j), acc));
      }
  }

  TEST_CASE("gemm_f32: shape and argument errors") {
    Tensor<float, 2> a({3, 4}), b({4, 5}), c({3, 5}), bad_c({3, 6});
    const kn::PackedWeightsF32 pb(b.cview());
    CHECK_THROWS_AS(kn::gemm_f32(a.cview(), pb, bad_c.view()), vitc::ShapeError);
    Tensor<float, 2> a5({3, 5});
    CHECK_THROWS_AS(kn::gemm_f32(a5.cview(), pb, c.view()), vitc::ShapeError);
    Tensor<float, 2> ct({5, 3});
    CHECK_THROWS_AS(kn::gemm_f32(a.cview(), pb, ct.view().transposed()), vitc::ArgumentError);
    Tensor<float, 1> bias4({4});
    CHECK_THROWS_AS(kn::gemm_f32(a.cview(), pb, c.view(), {bias4.cview(), {}}), vitc::ShapeError);
    CHECK_THROWS_AS(kn::gemm_f32(a.cview(), pb, c.view(), {{}, bad_c.cview()}), vitc::ShapeError);
    CHECK_NOTHROW(kn::gemm_f32(a.cview(), pb, c.view(), {{}, c.cview()}));
  }
}

}  // namespace gemm_f32_test
