// SPDX-License-Identifier: Apache-2.0
// Integer nonlinear kernels against their float references, on ViT shapes.
//
//   softmax/<impl>/<rows>x<cols>    attention rows: 12 heads × 197 tokens, 197 keys (DeiT-base)
//   layernorm/<impl>/<rows>x<dim>   197 tokens × 192 / 384 / 768 (DeiT-tiny / small / base)
//   gelu/<impl>/<n>                 197 × 768 / 1536 / 3072 values (fc1 outputs)
//
// impl: float (the reference: std::exp / std::erf / float LayerNorm, written so that the compiler
// vectorizes it; this file is built with -ffast-math so glibc's vector expf/erff are used and
// float sums may be reordered), ref (the scalar integer definition), xsimd, avx2, vnni (the
// kernels/arch.hpp paths). The plain names use int8 inputs: softmax with Shiftmax and 8-bit linear
// output, LayerNorm with PTF factors, GELU with I-GELU. Suffixes: _poly (I-BERT i-exp), _log2
// (4-bit log2 output), _i32 (int32 inputs), _i16 (int16 inputs), _res (int16 inputs as the
// engine's residual stream feeds them: 8-bit codes minus the zero point, with PTF factors),
// _shift (ShiftGELU).
// Every benchmark reports elem/s, the elements processed per second. Unavailable paths are
// skipped with "architecture unsupported".

#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "vitcompress/kernels/arch.hpp"
#include "vitcompress/kernels/gelu_int.hpp"
#include "vitcompress/kernels/layernorm_int.hpp"
#include "vitcompress/kernels/softmax_int.hpp"

namespace {

namespace k = vitc::kernels;
namespace arch = vitc::kernels::arch;
using vitc::Index;

void set_rate(benchmark::State& state, Index elements) {
  state.counters["elem/s"] = benchmark::Counter(static_cast<double>(elements),
                                                benchmark::Counter::kIsIterationInvariantRate);
}

template <class Arch>
bool runnable(benchmark::State& state) {
  if (Arch::available()) return true;
  state.SkipWithError("architecture unsupported");
  return false;
}

// ---- float references -------------------------------------------------------------------------

void softmax_float(const float* x, float* y, Index rows, Index cols) {
  for (Index r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    float* yr = y + r * cols;
    float m = xr[0];
    for (Index i = 1; i < cols; ++i) m = std::max(m, xr[i]);
    float sum = 0.0f;
    for (Index i = 0; i < cols; ++i) {
      yr[i] = std::exp(xr[i] - m);
      sum += yr[i];
    }
    const float inv = 1.0f / sum;
    for (Index i = 0; i < cols; ++i) yr[i] *= inv;
  }
}

void layernorm_float(const float* x, const float* gamma, const float* beta, float* y, Index rows,
                     Index dim) {
  for (Index r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    float* yr = y + r * dim;
    float sum = 0.0f;
    for (Index i = 0; i < dim; ++i) sum += xr[i];
    const float mean = sum / static_cast<float>(dim);
    float var = 0.0f;
    for (Index i = 0; i < dim; ++i) var += (xr[i] - mean) * (xr[i] - mean);
    const float inv = 1.0f / std::sqrt(var / static_cast<float>(dim) + 1e-6f);
    for (Index i = 0; i < dim; ++i) yr[i] = (xr[i] - mean) * inv * gamma[i] + beta[i];
  }
}

void gelu_float(const float* x, float* y, Index n) {
  for (Index i = 0; i < n; ++i) y[i] = 0.5f * x[i] * (1.0f + std::erf(x[i] * 0.70710678f));
}

// ---- data ---------------------------------------------------------------------------------------

template <class T>
std::vector<T> random_ints(Index n, double sigma, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> d(0.0, sigma);
  const double lo = std::numeric_limits<T>::min(), hi = std::numeric_limits<T>::max();
  std::vector<T> v(static_cast<std::size_t>(n));
  for (auto& x : v) x = static_cast<T>(std::clamp(std::round(d(rng)), lo, hi));
  return v;
}

std::vector<float> random_floats(Index n, double sigma, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, static_cast<float>(sigma));
  std::vector<float> v(static_cast<std::size_t>(n));
  for (auto& x : v) x = d(rng);
  return v;
}

// ---- softmax ------------------------------------------------------------------------------------

template <class Arch, class Exp, class Out, class In>
void bm_softmax(benchmark::State& state, Index rows, Index cols, float scale, int bits,
                double sigma) {
  if (!runnable<Arch>(state)) return;
  const auto params = k::prepare_softmax<Exp, Out>(scale, bits);
  const auto x = random_ints<In>(rows * cols, sigma, 1);
  std::vector<std::uint8_t> y(static_cast<std::size_t>(rows * cols));
  const vitc::TensorView<const In, 2> xv(x.data(), {rows, cols});
  const vitc::TensorView<std::uint8_t, 2> yv(y.data(), {rows, cols});
  for (auto _ : state) {
    k::softmax_int<Arch>(params, xv, yv);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  set_rate(state, rows * cols);
}

void bm_softmax_float(benchmark::State& state, Index rows, Index cols) {
  const auto x = random_floats(rows * cols, 2.0, 1);
  std::vector<float> y(x.size());
  for (auto _ : state) {
    softmax_float(x.data(), y.data(), rows, cols);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  set_rate(state, rows * cols);
}

// ---- layernorm ----------------------------------------------------------------------------------

// ptf: random power-of-two channel factors α ∈ [0, 3]; max_abs > 0 clamps the inputs to it.
template <class Arch, class In>
void bm_layernorm(benchmark::State& state, Index rows, Index dim, double sigma, bool ptf,
                  int max_abs) {
  if (!runnable<Arch>(state)) return;
  std::mt19937 rng(3);
  std::vector<float> gamma(static_cast<std::size_t>(dim)), beta(gamma.size());
  std::vector<std::uint8_t> alpha(gamma.size());
  for (std::size_t i = 0; i < gamma.size(); ++i) {
    gamma[i] = 1.0f + 0.1f * static_cast<float>(i % 7);
    beta[i] = 0.01f * static_cast<float>(i % 5);
    alpha[i] = ptf ? static_cast<std::uint8_t>(rng() % 4) : 0;
  }
  const auto params = k::prepare_layernorm(gamma, beta, 0.02f, 0.03f, 1e-6f, alpha);
  auto x = random_ints<In>(rows * dim, sigma, 2);
  if (max_abs > 0)
    for (auto& v : x) v = static_cast<In>(std::clamp<int>(v, -max_abs, max_abs));
  std::vector<std::int8_t> y(static_cast<std::size_t>(rows * dim));
  const vitc::TensorView<const In, 2> xv(x.data(), {rows, dim});
  const vitc::TensorView<std::int8_t, 2> yv(y.data(), {rows, dim});
  for (auto _ : state) {
    k::layernorm_int<Arch>(params, xv, yv);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  set_rate(state, rows * dim);
}

void bm_layernorm_float(benchmark::State& state, Index rows, Index dim) {
  const auto x = random_floats(rows * dim, 1.0, 2);
  std::vector<float> gamma(static_cast<std::size_t>(dim), 1.1f), beta(gamma.size(), 0.01f);
  std::vector<float> y(x.size());
  for (auto _ : state) {
    layernorm_float(x.data(), gamma.data(), beta.data(), y.data(), rows, dim);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  set_rate(state, rows * dim);
}

// ---- gelu ---------------------------------------------------------------------------------------

template <class Arch, class Policy, class In>
void bm_gelu(benchmark::State& state, Index rows, Index cols, float scale, double sigma) {
  if (!runnable<Arch>(state)) return;
  const auto params = k::prepare_gelu<Policy, In>(scale, 0.05f);
  const auto x = random_ints<In>(rows * cols, sigma, 4);
  std::vector<std::int8_t> y(static_cast<std::size_t>(rows * cols));
  const vitc::TensorView<const In, 2> xv(x.data(), {rows, cols});
  const vitc::TensorView<std::int8_t, 2> yv(y.data(), {rows, cols});
  for (auto _ : state) {
    k::gelu_int<Arch>(params, xv, yv);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  set_rate(state, rows * cols);
}

void bm_gelu_float(benchmark::State& state, Index n) {
  const auto x = random_floats(n, 1.5, 4);
  std::vector<float> y(x.size());
  for (auto _ : state) {
    gelu_float(x.data(), y.data(), n);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  set_rate(state, n);
}

// ---- registration -------------------------------------------------------------------------------

template <class Arch>
std::string impl_name() {
  if constexpr (std::is_same_v<Arch, arch::Scalar>)
    return "ref";
  else
    return std::string(Arch::kName);
}

template <class Arch>
void register_arch() {
  const std::string a = impl_name<Arch>();
  constexpr Index kTokens = 197;
  {
    const Index rows = 12 * kTokens, cols = kTokens;
    const std::string shape = std::to_string(rows) + "x" + std::to_string(cols);
    benchmark::RegisterBenchmark(("softmax/" + a + "/" + shape).c_str(),
                                 bm_softmax<Arch, k::ShiftExp, k::LinearProb, std::int8_t>, rows,
                                 cols, 0.08f, 8, 30.0);
    benchmark::RegisterBenchmark(("softmax/" + a + "_poly/" + shape).c_str(),
                                 bm_softmax<Arch, k::PolyExp, k::LinearProb, std::int8_t>, rows,
                                 cols, 0.08f, 8, 30.0);
    benchmark::RegisterBenchmark(("softmax/" + a + "_log2/" + shape).c_str(),
                                 bm_softmax<Arch, k::ShiftExp, k::Log2Prob, std::int8_t>, rows,
                                 cols, 0.08f, 4, 30.0);
    benchmark::RegisterBenchmark(("softmax/" + a + "_i32/" + shape).c_str(),
                                 bm_softmax<Arch, k::ShiftExp, k::LinearProb, std::int32_t>, rows,
                                 cols, 1e-4f, 8, 2e4);
  }
  for (Index dim : {192, 384, 768}) {
    const std::string shape = std::to_string(kTokens) + "x" + std::to_string(dim);
    benchmark::RegisterBenchmark(("layernorm/" + a + "/" + shape).c_str(),
                                 bm_layernorm<Arch, std::int8_t>, kTokens, dim, 30.0, true, 0);
    benchmark::RegisterBenchmark(("layernorm/" + a + "_i16/" + shape).c_str(),
                                 bm_layernorm<Arch, std::int16_t>, kTokens, dim, 3000.0, false, 0);
    benchmark::RegisterBenchmark(("layernorm/" + a + "_res/" + shape).c_str(),
                                 bm_layernorm<Arch, std::int16_t>, kTokens, dim, 80.0, true, 255);
  }
  for (Index cols : {768, 1536, 3072}) {
    const std::string n = std::to_string(kTokens * cols);
    benchmark::RegisterBenchmark(("gelu/" + a + "/" + n).c_str(),
                                 bm_gelu<Arch, k::IGelu, std::int8_t>, kTokens, cols, 0.05f, 30.0);
    benchmark::RegisterBenchmark(("gelu/" + a + "_shift/" + n).c_str(),
                                 bm_gelu<Arch, k::ShiftGelu, std::int8_t>, kTokens, cols, 0.05f,
                                 30.0);
    benchmark::RegisterBenchmark(("gelu/" + a + "_i32/" + n).c_str(),
                                 bm_gelu<Arch, k::IGelu, std::int32_t>, kTokens, cols, 1e-4f, 2e4);
    benchmark::RegisterBenchmark(("gelu/" + a + "_shift_i32/" + n).c_str(),
                                 bm_gelu<Arch, k::ShiftGelu, std::int32_t>, kTokens, cols, 1e-4f,
                                 2e4);
  }
}

bool register_all() {
  constexpr Index kTokens = 197;
  benchmark::RegisterBenchmark(
      ("softmax/float/" + std::to_string(12 * kTokens) + "x" + std::to_string(kTokens)).c_str(),
      bm_softmax_float, 12 * kTokens, kTokens);
  for (Index dim : {192, 384, 768})
    benchmark::RegisterBenchmark(
        ("layernorm/float/" + std::to_string(kTokens) + "x" + std::to_string(dim)).c_str(),
        bm_layernorm_float, kTokens, dim);
  for (Index cols : {768, 1536, 3072})
    benchmark::RegisterBenchmark(("gelu/float/" + std::to_string(kTokens * cols)).c_str(),
                                 bm_gelu_float, kTokens * cols);
  register_arch<arch::Scalar>();
  register_arch<arch::XsimdNative>();
#if VITC_HAVE_X86_TARGET_KERNELS
  register_arch<arch::Avx2>();
  register_arch<arch::Avx512Vnni>();
#endif
  return true;
}

const bool kRegistered = register_all();

}  // namespace
