// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <tuple>
#include <vector>

#include "vitcompress/core/parallel_for.hpp"
#include "vitcompress/core/tensor.hpp"
#include "vitcompress/kernels/arch.hpp"
#include "vitcompress/kernels/gemm_packed_multiply.hpp"

namespace packed_mul_test {

using vitc::Index;
using vitc::Tensor;
using vitc::TensorView;
namespace kn = vitc::kernels;
namespace arch = vitc::kernels::arch;

enum class Fill { kRandom, kMin, kMax, kAlternate };

void fill_range(TensorView<std::int8_t, 2> t, Fill how, int lo, int hi, std::mt19937& rng) {
  std::uniform_int_distribution<int> d(lo, hi);
  for (Index i = 0; i < t.extent(0); ++i)
    for (Index j = 0; j < t.extent(1); ++j) {
      int v = d(rng);
      if (how == Fill::kMin) v = lo;
      if (how == Fill::kMax) v = hi;
      if (how == Fill::kAlternate) v = ((i + j) % 2) ? lo : hi;
      t(i, j) = static_cast<std::int8_t>(v);
    }
}

// The plain int32 dot product (int64 to be sure nothing wraps in the reference itself).
Tensor<std::int32_t, 2> plain_product(TensorView<const std::int8_t, 2> a,
                                      const Tensor<std::int8_t, 2>& w) {
  const Index m = a.extent(0), k = a.extent(1), n = w.extent(1);
  Tensor<std::int32_t, 2> c({m, n});
  for (Index i = 0; i < m; ++i)
    for (Index j = 0; j < n; ++j) {
      std::int64_t s = 0;
      for (Index q = 0; q < k; ++q) s += std::int64_t{a(i, q)} * w(q, j);
      c(i, j) = static_cast<std::int32_t>(s);
    }
  return c;
}

template <class T>
bool same_tensor(const Tensor<T, 2>& x, const Tensor<T, 2>& y) {
  return x.shape() == y.shape() &&
         (x.size() == 0 ||
          std::memcmp(x.data(), y.data(), static_cast<std::size_t>(x.size()) * sizeof(T)) == 0);
}

struct Dims {
  Index m, k, n;
};

std::vector<Dims> dims() {
  std::vector<Dims> out;
  for (Index m : {0, 1, 3, 4, 5})
    for (Index k : {0, 1, 3, 4, 5, 31, 32, 33, 100})
      for (Index n : {0, 1, 16, 17, 32, 33, 50}) out.push_back({m, k, n});
  for (Dims d :
       {Dims{9, 510, 33}, Dims{9, 511, 33}, Dims{9, 512, 33}, Dims{5, 1023, 40}, Dims{1, 4096, 33},
        Dims{17, 4096, 48}, Dims{197, 192, 64}, Dims{17, 197, 1}, Dims{197, 17, 17}})
    out.push_back(d);
  return out;
}

// Activations of a dims entry: a K+3-column parent so that rows are unaligned and strided, and
// a view starting at column 1 (odd address).
struct Operands {
  Tensor<std::int8_t, 2> a_parent, w;
  TensorView<const std::int8_t, 2> a;
};

template <class Act>
Operands make_operands(Dims d, Fill a_fill, Fill w_fill, std::mt19937& rng) {
  Operands o{Tensor<std::int8_t, 2>({d.m, d.k + 3}), Tensor<std::int8_t, 2>({d.k, d.n}), {}};
  fill_range(o.a_parent.view(), a_fill, Act::kMin, Act::kMax, rng);
  fill_range(o.w.view(), w_fill, -8, 7, rng);
  const std::int8_t* base = d.m > 0 ? o.a_parent.data() + 1 : o.a_parent.data();
  o.a = TensorView<const std::int8_t, 2>(base, {d.m, d.k}, {d.k + 3, 1});
  return o;
}

template <class Act, class Arch>
Tensor<std::int32_t, 2> run(const Operands& o, const kn::PackedWeightsMul& p) {
  Tensor<std::int32_t, 2> c({o.a.extent(0), o.w.extent(1)});
  c.fill(12345);
  kn::gemm_packed_multiply<Act, Arch>(o.a, p, c.view());
  return c;
}

#if XSIMD_WITH_AVX512BW
#define PACKED_MUL_TAGS \
  arch::Scalar, arch::XsimdNative, arch::Xsimd<xsimd::avx2>, arch::Xsimd<xsimd::sse4_2>
#elif XSIMD_WITH_AVX2
#define PACKED_MUL_TAGS arch::Scalar, arch::XsimdNative, arch::Xsimd<xsimd::sse4_2>
#else
#define PACKED_MUL_TAGS arch::Scalar, arch::XsimdNative
#endif

template <class Act, class Tag>
void check_all_dims(std::uint32_t seed) {
  std::mt19937 rng(seed);
  const Fill fills[][2] = {{Fill::kRandom, Fill::kRandom}, {Fill::kMin, Fill::kMin},
                           {Fill::kMax, Fill::kMin},       {Fill::kMin, Fill::kMax},
                           {Fill::kMax, Fill::kMax},       {Fill::kAlternate, Fill::kAlternate}};
  for (const Dims d : dims())
    for (const auto& f : fills) {
      const Operands o = make_operands<Act>(d, f[0], f[1], rng);
      const kn::PackedWeightsMul p(o.w.cview());
      const auto expect = plain_product(o.a, o.w);
      const auto ref = run<Act, arch::Scalar>(o, p);
      const auto got = run<Act, Tag>(o, p);
      CAPTURE(d.m);
      CAPTURE(d.k);
      CAPTURE(d.n);
      CAPTURE(static_cast<int>(f[0]));
      CAPTURE(static_cast<int>(f[1]));
      REQUIRE(same_tensor(ref, expect));  // the guard bits hold: the definition is exact
      REQUIRE(same_tensor(got, ref));     // the path equals the definition bit for bit
    }
}

TEST_SUITE("kernels") {
  TEST_CASE("PackedWeightsMul: layout round trip, size and validation") {
    std::mt19937 rng(40);
    for (Dims d : {Dims{0, 0, 0}, Dims{0, 5, 0}, Dims{0, 0, 7}, Dims{0, 13, 45}, Dims{0, 64, 32}}) {
      Tensor<std::int8_t, 2> w({d.k, d.n});
      fill_range(w.view(), Fill::kRandom, -8, 7, rng);
      const kn::PackedWeightsMul p(w.cview());
      CHECK(p.depth() == d.k);
      CHECK(p.cols() == d.n);
      CHECK(p.bytes() == (d.n + 31) / 32 * ((d.k + 3) / 4) * 64);
      bool ok = true;
      for (Index k = 0; k < d.k; ++k)
        for (Index j = 0; j < d.n; ++j) ok = ok && p.at(k, j) == w(k, j);
      CHECK(ok);
    }
    Tensor<std::int8_t, 2> bad({3, 4});
    bad(2, 1) = 8;
    CHECK_THROWS_AS(kn::PackedWeightsMul(bad.cview()), vitc::ArgumentError);
    bad(2, 1) = -9;
    CHECK_THROWS_AS(kn::PackedWeightsMul(bad.cview()), vitc::ArgumentError);
  }

  TEST_CASE("packed multiplier: the chunk lengths are the largest collision-free ones") {
    // Worst-case products: 4x4 max 64 = (−8)(−8), min −56; 4x8 max 1024 = (−128)(−8), min −1016.
    CHECK(64 * kn::PackedA4::kChunk <= 32767);
    CHECK(64 * (kn::PackedA4::kChunk + 1) > 32767);
    CHECK(56 * kn::PackedA4::kChunk <= 32768);
    CHECK(1024 * kn::PackedA8::kChunk <= 32767);
    CHECK(1024 * (kn::PackedA8::kChunk + 1) > 32767);
    CHECK(1016 * kn::PackedA8::kChunk <= 32768);
    // One chunk longer than K_c does collide: the fields are really extracted per chunk.
    std::uint32_t acc = 0;
    for (Index k = 0; k <= kn::PackedA8::kChunk; ++k)
      acc += static_cast<std::uint32_t>(-128) * kn::detail::packed_word(-8, -8);
    CHECK(kn::detail::field_lo(acc) != 1024 * (kn::PackedA8::kChunk + 1));
  }

  TEST_CASE_TEMPLATE("gemm_packed_multiply 4x8: exact and equal to the definition", Tag,
                     PACKED_MUL_TAGS) {
    if (!Tag::available()) {
      MESSAGE("path not available on this CPU: " << Tag::kName);
      return;
    }
    check_all_dims<kn::PackedA8, Tag>(41);
  }

  TEST_CASE_TEMPLATE("gemm_packed_multiply 4x4: exact and equal to the definition", Tag,
                     PACKED_MUL_TAGS) {
    if (!Tag::available()) {
      MESSAGE("path not available on this CPU: " << Tag::kName);
      return;
    }
    check_all_dims<kn::PackedA4, Tag>(42);
  }

  TEST_CASE("gemm_packed_multiply: output pipeline, threads, auto dispatch and errors") {
    std::mt19937 rng(43);
    const Dims d{13, 300, 70};
    const Operands o = make_operands<kn::PackedA8>(d, Fill::kRandom, Fill::kRandom, rng);
    const kn::PackedWeightsMul p(o.w.cview());
    const auto expect = plain_product(o.a, o.w);
    const auto pipeline =
        std::make_tuple(kn::OutputClamp{-100, 100}, kn::OutputSaturatingCast<std::int8_t>{});
    Tensor<std::int8_t, 2> c8({d.m, d.n});
    vitc::ThreadPool pool(2);
    kn::gemm_packed_multiply<kn::PackedA8>(o.a, p, pipeline, c8.view(), pool);
    bool ok = true;
    for (Index i = 0; i < d.m; ++i)
      for (Index j = 0; j < d.n; ++j)
        ok = ok && c8(i, j) == std::clamp(expect(i, j), std::int32_t{-100}, std::int32_t{100});
    CHECK(ok);

    Tensor<std::int32_t, 2> c({d.m, d.n});
    kn::gemm_packed_multiply<kn::PackedA8>(o.a, p, c.view());
    CHECK(same_tensor(c, expect));

    // PackedA4 rejects activations outside [−8, 7]; wrong shapes and x86-only paths throw.
    CHECK_THROWS_AS(kn::gemm_packed_multiply<kn::PackedA4>(o.a, p, c.view()), vitc::ArgumentError);
    Tensor<std::int32_t, 2> wrong({d.m, d.n + 1});
    CHECK_THROWS_AS(kn::gemm_packed_multiply<kn::PackedA8>(o.a, p, wrong.view()), vitc::ShapeError);
    Tensor<std::int8_t, 2> a_short({d.m, d.k - 1});
    CHECK_THROWS_AS(kn::gemm_packed_multiply<kn::PackedA8>(a_short.cview(), p, c.view()),
                    vitc::ShapeError);
#if VITC_HAVE_X86_TARGET_KERNELS
    CHECK_THROWS_AS((kn::gemm_packed_multiply<kn::PackedA8, arch::Avx512Vnni>(o.a, p, c.view())),
                    vitc::ArgumentError);
#endif
  }
}

}  // namespace packed_mul_test
