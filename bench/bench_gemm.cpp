// SPDX-License-Identifier: Apache-2.0
// int8 and 4-bit GEMM benchmarks on DeiT shapes: ours (ref, xsimd, avx2, vnni; avx2_w7 with
// 7-bit weights in [−63, 63]; int4_vnni,
// int4_avx2, int4_xsimd per-channel 4-bit; int4g64_vnni per-group G = 64, float out; int4m32_avx2
// per-group G = 32 with integer multipliers, int32 out) against Eigen
// fp32 and, when found, oneDNN u8×s8→s32 (with an `inexact` counter: the share of its outputs
// that differ from the exact sums) and fp32 matmul. Names:
// gemm/<impl>/<M>x<K>x<N>/threads:<t>; each reports GOPS (1 multiply-add = 2 ops, counted in 10^9
// per second). Weights are packed (ours, oneDNN's reorder) outside the timed loop. peak/vpdpbusd
// and peak/fma_f32 (AVX-512), peak/avx2_maddubs, peak/avx2_madd and peak/fma_f32_avx2 (AVX2)
// measure one core's instruction throughput so that figures can be quoted as % of peak.
// pack/kt|v/<T>x<d> time the per-call packing of attention's Kᵀ and V (one head).
//
// Typical run (the machine is shared; keep it short):
//   bench_gemm --benchmark_filter='gemm/(vnni|onednn_s8|eigen_f32)/197x'
//              --benchmark_repetitions=3 --benchmark_report_aggregates_only=true

#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <vector>

// GCC 12 flags the _mm512_undefined_*() pass-through operands of its own AVX-512 intrinsics as
// maybe-uninitialized once inlined into Eigen's kernels and the peak loops below (GCC bug 105593,
// a false positive). Silenced for Eigen's code and the peak microbenchmarks only.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <Eigen/Core>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

#include "vitcompress/core/parallel_for.hpp"
#include "vitcompress/core/tensor.hpp"
#include "vitcompress/kernels/arch.hpp"
#include "vitcompress/kernels/gemm_f32.hpp"
#include "vitcompress/kernels/gemm_int4_packed.hpp"
#include "vitcompress/kernels/gemm_int8.hpp"
#include "vitcompress/kernels/gemm_packed_multiply.hpp"

#if defined(VITC_HAVE_ONEDNN)
#include <dlfcn.h>

#include <oneapi/dnnl/dnnl.hpp>
#endif

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#endif

namespace {

using vitc::Index;
namespace kn = vitc::kernels;
namespace arch = vitc::kernels::arch;

struct Shape {
  Index m, k, n;
};

// (K, N) of the DeiT-tiny/small/base linear layers: qkv, proj, fc1, fc2.
constexpr Index kDeitKN[][2] = {{192, 576},  {192, 192}, {192, 768},  {768, 192},
                                {384, 1152}, {384, 384}, {384, 1536}, {1536, 384},
                                {768, 2304}, {768, 768}, {768, 3072}, {3072, 768}};

std::vector<Shape> shapes() {
  std::vector<Shape> out;
  for (Index m : {197, 8, 1})
    for (const auto& kn_pair : kDeitKN) out.push_back({m, kn_pair[0], kn_pair[1]});
  out.push_back({197, 64, 197});  // attention Q·Kᵀ (head dim 64)
  out.push_back({197, 197, 64});  // attention P·V
  // The shipped Fashion-MNIST model (17 tokens, heads of 24): Q·Kᵀ, P·V, and fc1 with 40% of
  // its 192 hidden units pruned (short last panels: 1, 8 and 3 columns).
  out.push_back({17, 24, 17});
  out.push_back({17, 17, 24});
  out.push_back({17, 96, 115});
  return out;
}

std::string name(const char* family, const char* impl, const Shape& s, int threads) {
  return std::string(family) + "/" + impl + "/" + std::to_string(s.m) + "x" + std::to_string(s.k) +
         "x" + std::to_string(s.n) + "/threads:" + std::to_string(threads);
}

void set_gops(benchmark::State& state, const Shape& s) {
  state.counters["GOPS"] = benchmark::Counter(2.0 * static_cast<double>(s.m * s.k * s.n) * 1e-9,
                                              benchmark::Counter::kIsIterationInvariantRate);
}

// Weights in [−weight_max, weight_max]: 127 for 8-bit symmetric codes, 63 for 7-bit ones.
struct Int8Operands {
  vitc::Tensor<std::uint8_t, 2> a;
  vitc::Tensor<std::int8_t, 2> b;
  explicit Int8Operands(const Shape& s, int weight_max = 127) : a({s.m, s.k}), b({s.k, s.n}) {
    std::mt19937 rng(42);
    const auto levels = static_cast<unsigned>(2 * weight_max + 1);
    for (auto& x : a.span()) x = static_cast<std::uint8_t>(rng());
    for (auto& x : b.span())
      x = static_cast<std::int8_t>(static_cast<int>(rng() % levels) - weight_max);
  }
};

// Our GEMM on a forced path; `requant` adds bias + per-channel requantization + int8 narrowing.
template <class Arch>
void bench_ours_weights(benchmark::State& state, Shape s, int threads, bool requant,
                        int weight_max) {
  if (!Arch::available()) {
    state.SkipWithError("architecture unsupported");
    return;
  }
  Int8Operands ops(s, weight_max);
  const kn::PackedWeightsInt8 packed(ops.b.cview());
  vitc::ThreadPool pool(threads);
  if (!requant) {
    vitc::Tensor<std::int32_t, 2> c({s.m, s.n});
    for (auto _ : state) {
      kn::gemm_int8<Arch>(ops.a.cview(), 128, packed, c.view(), pool);
      benchmark::DoNotOptimize(c.data());
      benchmark::ClobberMemory();
    }
  } else {
    std::vector<std::int32_t> bias(static_cast<std::size_t>(s.n), 1000);
    std::vector<kn::FixedPointMultiplier> mult(static_cast<std::size_t>(s.n),
                                               kn::fixed_point_from_scale(0.0007));
    const std::tuple<kn::OutputBiasAdd, kn::OutputRequantizePerChannel, kn::OutputAddZeroPoint,
                     kn::OutputSaturatingCast<std::int8_t>>
        pipeline{{bias}, {mult}, {3}, {}};
    vitc::Tensor<std::int8_t, 2> c({s.m, s.n});
    for (auto _ : state) {
      kn::gemm_int8<Arch>(ops.a.cview(), 128, packed, pipeline, c.view(), pool);
      benchmark::DoNotOptimize(c.data());
      benchmark::ClobberMemory();
    }
  }
  set_gops(state, s);
}

template <class Arch>
void bench_ours(benchmark::State& state, Shape s, int threads, bool requant) {
  bench_ours_weights<Arch>(state, s, threads, requant, 127);
}

// 4-bit weights: per-channel (group 0, raw int32 out), per-group G (float out), or per-group G
// with integer multipliers in [1, 15] (`multipliers`, raw int32 out).
template <class Arch>
void bench_int4(benchmark::State& state, Shape s, int threads, Index group, bool multipliers) {
  if (!Arch::available()) {
    state.SkipWithError("architecture unsupported");
    return;
  }
  Int8Operands ops(s);
  vitc::Tensor<std::int8_t, 2> w({s.k, s.n});
  std::mt19937 rng(7);
  for (auto& x : w.span()) x = static_cast<std::int8_t>(static_cast<int>(rng() % 16) - 8);
  const Index groups = group == 0 ? 1 : (s.k + group - 1) / group;
  const std::vector<float> scales(static_cast<std::size_t>(groups * s.n), 0.01f);
  std::vector<std::int32_t> mults(static_cast<std::size_t>(groups * s.n));
  for (auto& m : mults) m = static_cast<std::int32_t>(1 + rng() % 15);
  const kn::PackedWeightsInt4 packed =
      multipliers ? kn::PackedWeightsInt4::with_group_multipliers(w.cview(), mults, group)
                  : kn::PackedWeightsInt4(w.cview(), scales, group);
  vitc::ThreadPool pool(threads);
  if (group == 0 || multipliers) {
    vitc::Tensor<std::int32_t, 2> c({s.m, s.n});
    for (auto _ : state) {
      kn::gemm_int4<Arch>(ops.a.cview(), 128, packed, c.view(), pool);
      benchmark::DoNotOptimize(c.data());
      benchmark::ClobberMemory();
    }
  } else {
    vitc::Tensor<float, 2> c({s.m, s.n});
    for (auto _ : state) {
      kn::gemm_int4_grouped<Arch>(ops.a.cview(), 128, 0.02f, packed, {}, c.view(), pool);
      benchmark::DoNotOptimize(c.data());
      benchmark::ClobberMemory();
    }
  }
  set_gops(state, s);
}

void bench_eigen_f32(benchmark::State& state, Shape s) {
  using Mat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  Mat a = Mat::Random(s.m, s.k), b = Mat::Random(s.k, s.n), c(s.m, s.n);
  for (auto _ : state) {
    c.noalias() = a * b;
    benchmark::DoNotOptimize(c.data());
    benchmark::ClobberMemory();
  }
  set_gops(state, s);
}

#if defined(VITC_HAVE_ONEDNN)
// oneDNN here uses OpenMP; its thread count is set through libgomp, already loaded by libdnnl.
void onednn_set_threads(int threads) {
  using SetFn = void (*)(int);
  static const auto set = reinterpret_cast<SetFn>(dlsym(RTLD_DEFAULT, "omp_set_num_threads"));
  if (set != nullptr) set(threads);
}

void bench_onednn(benchmark::State& state, Shape s, int threads, bool int8) {
  using dt = dnnl::memory::data_type;
  using tag = dnnl::memory::format_tag;
  onednn_set_threads(threads);
  dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  dnnl::stream strm(eng);
  const dnnl::memory::dims ad{s.m, s.k}, bd{s.k, s.n}, cd{s.m, s.n};
  const dt at = int8 ? dt::u8 : dt::f32, bt = int8 ? dt::s8 : dt::f32,
           ct = int8 ? dt::s32 : dt::f32;
  const dnnl::memory::desc a_md(ad, at, tag::ab), b_any(bd, bt, tag::any), c_md(cd, ct, tag::ab);
  const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a_md, b_any, c_md), eng);
  dnnl::memory a_mem(a_md, eng), c_mem(c_md, eng), b_plain({bd, bt, tag::ab}, eng),
      b_mem(pd.weights_desc(), eng);
  std::mt19937 rng(42);
  if (int8) {
    auto* pa = static_cast<std::uint8_t*>(a_mem.get_data_handle());
    for (Index i = 0; i < s.m * s.k; ++i) pa[i] = static_cast<std::uint8_t>(rng());
    auto* pb = static_cast<std::int8_t*>(b_plain.get_data_handle());
    for (Index i = 0; i < s.k * s.n; ++i)
      pb[i] = static_cast<std::int8_t>(static_cast<int>(rng() % 255) - 127);
  } else {
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    auto* pa = static_cast<float*>(a_mem.get_data_handle());
    for (Index i = 0; i < s.m * s.k; ++i) pa[i] = u(rng);
    auto* pb = static_cast<float*>(b_plain.get_data_handle());
    for (Index i = 0; i < s.k * s.n; ++i) pb[i] = u(rng);
  }
  dnnl::reorder(b_plain, b_mem).execute(strm, b_plain, b_mem);  // packing, not timed
  dnnl::matmul mm(pd);
  const std::unordered_map<int, dnnl::memory> args{
      {DNNL_ARG_SRC, a_mem}, {DNNL_ARG_WEIGHTS, b_mem}, {DNNL_ARG_DST, c_mem}};
  if (int8) {
    // Outside the timed loop: the share of C elements (first rows) that differ from the exact
    // u8 × s8 sums. Without VNNI, oneDNN's kernel lets vpmaddubsw's int16 pair sums saturate.
    mm.execute(strm, args);
    strm.wait();
    const auto* pa = static_cast<const std::uint8_t*>(a_mem.get_data_handle());
    const auto* pb = static_cast<const std::int8_t*>(b_plain.get_data_handle());
    const auto* pc = static_cast<const std::int32_t*>(c_mem.get_data_handle());
    const Index rows = std::min<Index>(s.m, 8);
    Index wrong = 0;
    for (Index i = 0; i < rows; ++i)
      for (Index j = 0; j < s.n; ++j) {
        std::int64_t exact = 0;
        for (Index k = 0; k < s.k; ++k) exact += std::int64_t{pa[i * s.k + k]} * pb[k * s.n + j];
        wrong += exact != pc[i * s.n + j] ? 1 : 0;
      }
    state.counters["inexact"] = static_cast<double>(wrong) / static_cast<double>(rows * s.n);
  }
  for (auto _ : state) {
    mm.execute(strm, args);
    strm.wait();
    benchmark::ClobberMemory();
  }
  set_gops(state, s);
  onednn_set_threads(1);
}
#endif

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC bug 105593, see the Eigen include
#endif
// Independent chains of 12 instructions (more than latency × ports) on one core.
VITC_TARGET_AVX512VNNI void peak_vpdpbusd(benchmark::State& state) {
  if (!arch::Avx512Vnni::available()) {
    state.SkipWithError("architecture unsupported");
    return;
  }
  constexpr int kChains = 12, kInner = 1000;
  __m512i acc[kChains];
  for (int j = 0; j < kChains; ++j) acc[j] = _mm512_set1_epi32(j);
  __m512i a = _mm512_set1_epi32(0x01010101), b = _mm512_set1_epi32(0x02020202);
  for (auto _ : state) {
    for (int i = 0; i < kInner; ++i) {
      __asm__ volatile("" : "+v"(a), "+v"(b));
#pragma GCC unroll 12
      for (int j = 0; j < kChains; ++j) acc[j] = _mm512_dpbusd_epi32(acc[j], a, b);
    }
  }
  int sink = 0;
  for (int j = 0; j < kChains; ++j) sink += _mm512_reduce_add_epi32(acc[j]);
  benchmark::DoNotOptimize(sink);
  state.counters["GOPS"] = benchmark::Counter(kChains * kInner * 64.0 * 2.0 * 1e-9,
                                              benchmark::Counter::kIsIterationInvariantRate);
}

VITC_TARGET_AVX512VNNI void peak_fma_f32(benchmark::State& state) {
  if (!arch::Avx512Vnni::available()) {
    state.SkipWithError("architecture unsupported");
    return;
  }
  constexpr int kChains = 12, kInner = 1000;
  __m512 acc[kChains];
  for (int j = 0; j < kChains; ++j) acc[j] = _mm512_set1_ps(static_cast<float>(j));
  __m512 x = _mm512_set1_ps(1.0001f), y = _mm512_set1_ps(0.9999f);
  for (auto _ : state) {
    for (int i = 0; i < kInner; ++i) {
      __asm__ volatile("" : "+v"(x), "+v"(y));
#pragma GCC unroll 12
      for (int j = 0; j < kChains; ++j) acc[j] = _mm512_fmadd_ps(acc[j], x, y);
    }
  }
  float sink = 0;
  for (int j = 0; j < kChains; ++j) sink += _mm512_reduce_add_ps(acc[j]);
  benchmark::DoNotOptimize(sink);
  state.counters["GOPS"] = benchmark::Counter(kChains * kInner * 16.0 * 2.0 * 1e-9,
                                              benchmark::Counter::kIsIterationInvariantRate);
}

// The AVX2 peaks, in assembly: with twelve accumulators in an array GCC keeps some on the stack
// and the loop measures store forwarding. Twelve independent chains in ymm0–11 (more than latency
// × ports), ymm12 = weights, ymm13 = int16 ones, ymm14/15 temporaries (renamed per chain):
//   avx2_maddubs  vpmaddubsw + vpmaddwd(·, 1) + vpaddd, 32 multiply-adds (the AVX2 int8 kernel's
//                 chain; the chain's own value is the activation operand);
//   avx2_madd     vpmaddwd + vpaddd, 16 multiply-adds (int16 operands);
//   fma_f32_avx2  vfmadd231ps, 8.
#define VITC_PEAK_REPEAT12(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
#define VITC_PEAK_MADDUBS(i)             \
  "vpmaddubsw %%ymm12, %%ymm" #i         \
  ", %%ymm14\n"                          \
  "vpmaddwd %%ymm13, %%ymm14, %%ymm14\n" \
  "vpaddd %%ymm14, %%ymm" #i ", %%ymm" #i "\n"
#define VITC_PEAK_MADD(i)      \
  "vpmaddwd %%ymm12, %%ymm" #i \
  ", %%ymm14\n"                \
  "vpaddd %%ymm14, %%ymm" #i ", %%ymm" #i "\n"
#define VITC_PEAK_FMA(i) "vfmadd231ps %%ymm12, %%ymm13, %%ymm" #i "\n"

enum class Avx2Peak { kMaddubs, kMadd, kFma };

template <Avx2Peak kKind>
void peak_avx2(benchmark::State& state) {
  if (!arch::Avx2::available()) {
    state.SkipWithError("architecture unsupported");
    return;
  }
  constexpr int kInner = 1000;
  for (auto _ : state) {
    // Registers start from small integers / 1.0f-like bit patterns; values do not matter.
    __asm__ volatile(
        "vpcmpeqd %%ymm13, %%ymm13, %%ymm13\n"
        "vpsrlw $15, %%ymm13, %%ymm13\n"
        "vpsllw $1, %%ymm13, %%ymm12\n"
        "vmovdqa %%ymm13, %%ymm0\n vmovdqa %%ymm13, %%ymm1\n vmovdqa %%ymm13, %%ymm2\n"
        "vmovdqa %%ymm13, %%ymm3\n vmovdqa %%ymm13, %%ymm4\n vmovdqa %%ymm13, %%ymm5\n"
        "vmovdqa %%ymm13, %%ymm6\n vmovdqa %%ymm13, %%ymm7\n vmovdqa %%ymm13, %%ymm8\n"
        "vmovdqa %%ymm13, %%ymm9\n vmovdqa %%ymm13, %%ymm10\n vmovdqa %%ymm13, %%ymm11\n"
        "mov %[n], %%ecx\n"
        "1:\n"
        ".if %c[kind] == 0\n" VITC_PEAK_REPEAT12(VITC_PEAK_MADDUBS) ".endif\n"
        ".if %c[kind] == 1\n" VITC_PEAK_REPEAT12(VITC_PEAK_MADD) ".endif\n"
        ".if %c[kind] == 2\n" VITC_PEAK_REPEAT12(VITC_PEAK_FMA) ".endif\n"
        "dec %%ecx\n"
        "jnz 1b\n"
        "vzeroupper\n"
        :
        : [n] "i"(kInner), [kind] "i"(static_cast<int>(kKind))
        : "ecx", "cc", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8",
          "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15");
  }
  const double per_instr =
      kKind == Avx2Peak::kMaddubs ? 32.0 : (kKind == Avx2Peak::kMadd ? 16.0 : 8.0);
  state.counters["GOPS"] = benchmark::Counter(12.0 * kInner * per_instr * 2.0 * 1e-9,
                                              benchmark::Counter::kIsIterationInvariantRate);
}
#undef VITC_PEAK_REPEAT12
#undef VITC_PEAK_MADDUBS
#undef VITC_PEAK_MADD
#undef VITC_PEAK_FMA
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif

// Packing an attention operand per call (PackedWeightsInt8::repack): Kᵀ of one head (the key
// rows' head slice, transposed view) or V, from T tokens of a qkv-like activation (row stride
// 3·d). pack/<kt|v>/<T>x<d>; bytes/s counts the head slice.
void bench_pack(benchmark::State& state, Index t, Index d, bool keys) {
  std::mt19937 rng(5);
  std::vector<std::int8_t> qkv(static_cast<std::size_t>(t * 3 * d));
  for (auto& v : qkv) v = static_cast<std::int8_t>(rng());
  const vitc::TensorView<const std::int8_t, 2> head(qkv.data() + d, {t, d}, {3 * d, 1});
  auto packed = vitc::kernels::PackedWeightsInt8::reserved(keys ? d : t, keys ? t : d);
  for (auto _ : state) {
    packed.repack(keys ? head.transposed() : head);
    benchmark::DoNotOptimize(packed.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * t * d);
}

const bool kRegistered = [] {
  for (const auto& [t, d] : {std::pair<Index, Index>{17, 16}, {197, 64}, {50, 60}}) {
    const std::string shape = std::to_string(t) + "x" + std::to_string(d);
    benchmark::RegisterBenchmark(("pack/kt/" + shape).c_str(), bench_pack, t, d, true);
    benchmark::RegisterBenchmark(("pack/v/" + shape).c_str(), bench_pack, t, d, false);
  }
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  benchmark::RegisterBenchmark("peak/vpdpbusd/threads:1", peak_vpdpbusd);
  benchmark::RegisterBenchmark("peak/fma_f32/threads:1", peak_fma_f32);
  benchmark::RegisterBenchmark("peak/avx2_maddubs/threads:1", peak_avx2<Avx2Peak::kMaddubs>);
  benchmark::RegisterBenchmark("peak/avx2_madd/threads:1", peak_avx2<Avx2Peak::kMadd>);
  benchmark::RegisterBenchmark("peak/fma_f32_avx2/threads:1", peak_avx2<Avx2Peak::kFma>);
#endif
  // threads:1 rates use CPU time (robust on a shared machine); threads:2 must use wall time.
  auto timing = [](benchmark::internal::Benchmark* b, int t) {
    if (t > 1) b->UseRealTime();
  };
  for (const Shape& s : shapes()) {
    for (int t : {1, 2}) {
      timing(benchmark::RegisterBenchmark(name("gemm", "vnni", s, t).c_str(),
                                          bench_ours<arch::Avx512Vnni>, s, t, false),
             t);
      timing(benchmark::RegisterBenchmark(name("gemm", "avx2", s, t).c_str(),
                                          bench_ours<arch::Avx2>, s, t, false),
             t);
      // 7-bit weights: on AVX2 the exact vpmaddubsw kernel (see detail/gemm_int8_avx2.hpp).
      timing(benchmark::RegisterBenchmark(name("gemm", "avx2_w7", s, t).c_str(),
                                          bench_ours_weights<arch::Avx2>, s, t, false, 63),
             t);
      timing(benchmark::RegisterBenchmark(name("gemm", "xsimd", s, t).c_str(),
                                          bench_ours<arch::XsimdNative>, s, t, false),
             t);
#if defined(VITC_HAVE_ONEDNN)
      timing(benchmark::RegisterBenchmark(name("gemm", "onednn_s8", s, t).c_str(), bench_onednn, s,
                                          t, true),
             t);
      timing(benchmark::RegisterBenchmark(name("gemm", "onednn_f32", s, t).c_str(), bench_onednn, s,
                                          t, false),
             t);
#endif
    }
    benchmark::RegisterBenchmark(name("gemm", "ref", s, 1).c_str(), bench_ours<arch::Scalar>, s, 1,
                                 false);
    for (int t : {1, 2}) {
      timing(benchmark::RegisterBenchmark(name("gemm", "int4_vnni", s, t).c_str(),
                                          bench_int4<arch::Avx512Vnni>, s, t, Index{0}, false),
             t);
      timing(benchmark::RegisterBenchmark(name("gemm", "int4g64_vnni", s, t).c_str(),
                                          bench_int4<arch::Avx512Vnni>, s, t, Index{64}, false),
             t);
    }
    benchmark::RegisterBenchmark(name("gemm", "int4_avx2", s, 1).c_str(), bench_int4<arch::Avx2>, s,
                                 1, Index{0}, false);
    benchmark::RegisterBenchmark(name("gemm", "int4m32_avx2", s, 1).c_str(), bench_int4<arch::Avx2>,
                                 s, 1, Index{32}, true);
    benchmark::RegisterBenchmark(name("gemm", "int4_xsimd", s, 1).c_str(),
                                 bench_int4<arch::XsimdNative>, s, 1, Index{0}, false);
    benchmark::RegisterBenchmark(name("gemm", "eigen_f32", s, 1).c_str(), bench_eigen_f32, s);
    benchmark::RegisterBenchmark(name("gemm_requant", "vnni", s, 1).c_str(),
                                 bench_ours<arch::Avx512Vnni>, s, 1, true);
    benchmark::RegisterBenchmark(name("gemm_requant", "avx2", s, 1).c_str(), bench_ours<arch::Avx2>,
                                 s, 1, true);
  }
  return true;
}();

// ---- fp32 GEMM on packed weights: gemm/f32_<scalar|xsimd|avx2|avx512>/<M>x<K>x<N>/threads:<t>,
// the same shapes as above, beside eigen_f32 and onednn_f32. B is packed outside the timed loop.
template <class Arch>
void bench_f32(benchmark::State& state, Shape s, int threads) {
  if (!Arch::available()) {
    state.SkipWithError("architecture unsupported");
    return;
  }
  vitc::Tensor<float, 2> a({s.m, s.k}), b({s.k, s.n}), c({s.m, s.n});
  vitc::Tensor<float, 1> bias({s.n});
  std::mt19937 rng(42);
  std::normal_distribution<float> d(0.0F, 1.0F);
  for (auto& x : a.span()) x = d(rng);
  for (auto& x : b.span()) x = d(rng);
  for (auto& x : bias.span()) x = d(rng);
  const kn::PackedWeightsF32 pb(b.cview());
  vitc::ThreadPool pool(threads);
  const kn::GemmF32Epilogue ep{bias.cview(), {}};
  for (auto _ : state) {
    kn::gemm_f32<Arch>(a.cview(), pb, c.view(), ep, pool);
    benchmark::DoNotOptimize(c.data());
    benchmark::ClobberMemory();
  }
  set_gops(state, s);
}

const bool kRegisteredF32 = [] {
  for (const Shape& s : shapes())
    for (int t : {1, 2}) {
      const auto reg = [&](const char* impl, auto fn) {
        auto* b = benchmark::RegisterBenchmark(name("gemm", impl, s, t).c_str(), fn, s, t);
        if (t > 1) b->UseRealTime();
      };
      reg("f32_avx512", bench_f32<arch::Avx512Vnni>);
      reg("f32_avx2", bench_f32<arch::Avx2>);
      reg("f32_xsimd", bench_f32<arch::XsimdNative>);
      if (t == 1) reg("f32_scalar", bench_f32<arch::Scalar>);
    }
  return true;
}();
// ---- end of the fp32 GEMM block

// ---- packed multiplier (kernels/gemm_packed_multiply.hpp): gemm/packed_mul_<impl>/<M>x<K>x<N>/
// threads:1 with impl xsimd or ref (4-bit weights × int8 activations, PackedA8, raw int32 out)
// and packed_mul4_xsimd (4-bit × 4-bit, PackedA4), beside int4_vnni / int4_avx2 / int4_xsimd (the
// unpack-to-int8 kernel) on the same shapes. Weights are packed outside the timed loop.
template <class Act, class Arch>
void bench_packed_mul(benchmark::State& state, Shape s) {
  if (!Arch::available()) {
    state.SkipWithError("architecture unsupported");
    return;
  }
  vitc::Tensor<std::int8_t, 2> a({s.m, s.k}), w({s.k, s.n});
  vitc::Tensor<std::int32_t, 2> c({s.m, s.n});
  std::mt19937 rng(7);
  for (auto& x : w.span()) x = static_cast<std::int8_t>(static_cast<int>(rng() % 16) - 8);
  const int span = std::is_same_v<Act, kn::PackedA4> ? 16 : 256;
  for (auto& x : a.span()) x = static_cast<std::int8_t>(static_cast<int>(rng() % span) - span / 2);
  const kn::PackedWeightsMul packed(w.cview());
  for (auto _ : state) {
    kn::gemm_packed_multiply<Act, Arch>(a.cview(), packed, c.view());
    benchmark::DoNotOptimize(c.data());
    benchmark::ClobberMemory();
  }
  set_gops(state, s);
}

const bool kRegisteredPackedMul = [] {
  for (const Shape& s : shapes()) {
    benchmark::RegisterBenchmark(name("gemm", "packed_mul_xsimd", s, 1).c_str(),
                                 bench_packed_mul<kn::PackedA8, arch::XsimdNative>, s);
    benchmark::RegisterBenchmark(name("gemm", "packed_mul4_xsimd", s, 1).c_str(),
                                 bench_packed_mul<kn::PackedA4, arch::XsimdNative>, s);
    benchmark::RegisterBenchmark(name("gemm", "packed_mul_ref", s, 1).c_str(),
                                 bench_packed_mul<kn::PackedA8, arch::Scalar>, s);
  }
  return true;
}();
// ---- end of the packed multiplier block

}  // namespace
