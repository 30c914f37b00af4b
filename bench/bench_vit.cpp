// SPDX-License-Identifier: Apache-2.0
// End-to-end latency of the integer engine beside the float forward, in one binary so that both
// run in the same session: vit/<model>/<fp32|int8|int8w7|int4|int4g32>/b<batch>/t<threads>.
//
//   model    shipped (models/fashion_mnist_vit.safetensors when present, otherwise its config with
//            random weights), deit_tiny, deit_small, deit_base (224x224, patch 16, random
//            weights from a fixed seed)
//   fp32     model::PackedViT (weights packed once, kernels::gemm_f32; the float baseline)
//   int8     engine::IntViT<> (w8a8, default policies, runtime-dispatched kernels), built from a
//            FakeQuantViT calibrated on two random N(0, 1) images (latency does not depend on
//            the calibration; accuracy is measured by tests/engine)
//   int8w7   the same engine on a w7a8 simulation: every weight 7-bit, for which the AVX2 int8
//            GEMM needs no widening (kernels/detail/gemm_int8_avx2.hpp)
//   int4     the same engine on a w4a8 simulation: qkv, proj, fc1, fc2 weights 4-bit per
//            channel (kernels::gemm_int4), patch embedding and head 8-bit
//   int4g32  w4a8-g32: those 4-bit weights per group of 32 along K with integer group scales
//            (the 4-bit kernel's integer groups, quant/group_scales.hpp)
//   batch    1, 8;  threads 1, 2 (a ThreadPool)
//
// Pruned float models: vit/<model>_p<R>/fp32/b1/t1 for model shipped and deit_tiny and R = 9
// (9.375%), 20, 40, 60: heads and MLP units removed by magnitude (L2), the same ratio in every
// block (prune::plan_pruning, as `vitc prune --importance magnitude --groups heads,mlp`), so the
// fp32 latency can be set against the MACs removed (GMACs/image) within one run. The pruned
// shapes do not depend on the weights' values, only the choice of units does.
//
// Two of the engine's loops alone (AVX-512; skipped elsewhere), on DeiT-tiny's shapes:
//   engine/rescale/<row|rows>/197x192      the residual add's requantization, row by row
//                                          (rescale_row_avx512) or in row tiles
//                                          (rescale_rows_avx512), in place
//   engine/gelu_lookup/hi<h>/197x768       TableGelu's bucket lookup (VBMI) of N(0, 1) fc1
//                                          outputs, fc2 input range [−0.17, h]; counter ups
//
// Counters: images/s (rate), GMACs per image. Setup (weights, calibration, packing, buffers) and
// one warm-up pass run before the timed loop. Run on a quiet machine; quote ratios of one run.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "vitcompress/core/cpu_features.hpp"
#include "vitcompress/engine/int_vit.hpp"
#include "vitcompress/model/packed_vit.hpp"
#include "vitcompress/model/vit_checkpoint.hpp"
#include "vitcompress/model/vit_forward.hpp"
#include "vitcompress/prune/pruner.hpp"
#include "vitcompress/prune/score_groups.hpp"
#include "vitcompress/prune/vit_graph.hpp"
#include "vitcompress/prune/vit_pruner.hpp"
#include "vitcompress/quant/fake_quant_vit.hpp"

namespace {

using vitc::Index;
using vitc::Tensor;
namespace model = vitc::model;

model::ViTWeights<float> load_weights(const std::string& name);

// Heads and MLP units of `w` removed by magnitude, `ratio` of each block's units.
model::ViTWeights<float> pruned_by_magnitude(const model::ViTWeights<float>& w, double ratio) {
  namespace prune = vitc::prune;
  const prune::ViTGraph graph = prune::vit_graph(w.config);
  prune::PruneOptions opt;
  opt.ratio = ratio;
  prune::ScoreOptions sopt;
  for (const auto& g : graph.graph.groups())
    sopt.which.push_back(g.kind == prune::GroupKind::kHeads || g.kind == prune::GroupKind::kHidden);
  const auto params = prune::param_tensors(w);
  const auto scores = prune::score_groups<float>(graph.graph, params, {}, prune::ScoreSpec{}, sopt);
  return prune::apply_pruning(w, graph, prune::plan_pruning(graph.graph, scores, opt));
}

model::ViTWeights<float> load_weights(const std::string& name) {
  if (const auto at = name.rfind("_p"); at != std::string::npos) {  // e.g. deit_tiny_p40
    const std::string percent = name.substr(at + 2);
    const double ratio = percent == "9" ? 0.09375 : std::stod(percent) / 100.0;
    return pruned_by_magnitude(load_weights(name.substr(0, at)), ratio);
  }
  if (name == "shipped") {
    const std::filesystem::path ckpt =
        std::filesystem::path(VITC_SOURCE_DIR) / "models" / "fashion_mnist_vit.safetensors";
    if (std::filesystem::exists(ckpt)) return model::load_vit(ckpt);
    return model::ViTWeights<float>::random(model::ViTConfig::fashion_mnist_vit(), 1);
  }
  const model::ViTConfig cfg = name == "deit_tiny"    ? model::ViTConfig::deit_tiny()
                               : name == "deit_small" ? model::ViTConfig::deit_small()
                                                      : model::ViTConfig::deit_base();
  return model::ViTWeights<float>::random(cfg, 1);
}

const model::ViTWeights<float>& weights_for(const std::string& name) {
  static std::map<std::string, std::unique_ptr<model::ViTWeights<float>>> cache;
  auto& slot = cache[name];
  if (!slot) slot = std::make_unique<model::ViTWeights<float>>(load_weights(name));
  return *slot;
}

Tensor<float, 4> random_images(const model::ViTConfig& c, Index batch, std::uint64_t seed) {
  Tensor<float, 4> images({batch, c.in_channels, c.image_size, c.image_size});
  model::detail::NormalSampler rng(seed);
  for (float& v : images.span()) v = static_cast<float>(rng.next());
  return images;
}

// A w8a8 (or `config`) simulation calibrated through its hooks on two random images.
const vitc::quant::FakeQuantViT& calibrated_for(const std::string& name,
                                                const std::string& config = "w8a8") {
  static std::map<std::string, std::unique_ptr<vitc::quant::FakeQuantViT>> cache;
  auto& slot = cache[name + "/" + config];
  if (!slot) {
    slot = std::make_unique<vitc::quant::FakeQuantViT>(weights_for(name),
                                                       vitc::quant::QuantConfig::named(config));
    auto& fq = *slot;
    fq.quantize_weights();
    const auto& c = fq.master_weights().config;
    const auto images = random_images(c, 2, 3);
    Tensor<float, 2> logits({2, c.num_classes});
    model::ViTWorkspace<float> ws;
    fq.hooks().set_mode(vitc::quant::FakeQuantHooks::Mode::kObserve);
    model::vit_forward(fq.simulated_weights(), images.cview(), logits.view(), ws, nullptr,
                       model::Pass::kInference, fq.hooks());
    fq.hooks().finish_calibration();
  }
  return *slot;
}

void set_counters(benchmark::State& state, const model::ViTConfig& c, Index batch) {
  state.counters["images/s"] =
      benchmark::Counter(static_cast<double>(batch), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GMACs/image"] = static_cast<double>(c.macs_per_image()) * 1e-9;
}

void bench_fp32(benchmark::State& state, const std::string& name, Index batch, int threads) {
  const auto& w = weights_for(name);
  const auto& c = w.config;
  const auto images = random_images(c, batch, 7);
  Tensor<float, 2> logits({batch, c.num_classes});
  vitc::ThreadPool pool(threads);
  model::PackedViT net(w);
  net.forward(images.cview(), logits.view(), &pool);
  for (auto _ : state) {
    net.forward(images.cview(), logits.view(), &pool);
    benchmark::DoNotOptimize(logits.data());
    benchmark::ClobberMemory();
  }
  set_counters(state, c, batch);
}

void bench_engine(benchmark::State& state, const std::string& name, const std::string& config,
                  Index batch, int threads) {
  const auto& fq = calibrated_for(name, config);
  const auto& c = fq.master_weights().config;
  const auto images = random_images(c, batch, 7);
  Tensor<float, 2> logits({batch, c.num_classes});
  vitc::ThreadPool pool(threads);
  vitc::engine::IntViT<> eng(fq, batch, &pool);
  eng.run(images.cview(), logits.view());
  for (auto _ : state) {
    eng.run(images.cview(), logits.view());
    benchmark::DoNotOptimize(logits.data());
    benchmark::ClobberMemory();
  }
  set_counters(state, c, batch);
  state.counters["weight_MB"] = static_cast<double>(eng.weight_bytes()) * 1e-6;
}

void register_all() {
  for (const char* name : {"shipped", "deit_tiny", "deit_small", "deit_base"})
    for (int batch : {1, 8})
      for (int threads : {1, 2})
        for (const char* prec : {"fp32", "int8", "int8w7", "int4", "int4g32"}) {
          const std::string label = std::string("vit/") + name + "/" + prec + "/b" +
                                    std::to_string(batch) + "/t" + std::to_string(threads);
          auto* b = benchmark::RegisterBenchmark(label.c_str(), [name = std::string(name),
                                                                 prec = std::string(prec), batch,
                                                                 threads](benchmark::State& state) {
                      if (prec == "fp32")
                        bench_fp32(state, name, batch, threads);
                      else
                        bench_engine(state, name,
                                     prec == "int8"      ? "w8a8"
                                     : prec == "int8w7"  ? "w7a8"
                                     : prec == "int4g32" ? "w4a8-g32"
                                                         : "w4a8",
                                     batch, threads);
                    })->Unit(benchmark::kMillisecond);
          if (threads > 1) b->UseRealTime();
        }
}

void register_pruned() {
  for (const char* name : {"shipped", "deit_tiny"})
    for (const char* percent : {"9", "20", "40", "60"}) {
      const std::string model = std::string(name) + "_p" + percent;
      benchmark::RegisterBenchmark(
          ("vit/" + model + "/fp32/b1/t1").c_str(),
          [model](benchmark::State& state) { bench_fp32(state, model, 1, 1); })
          ->Unit(benchmark::kMillisecond);
    }
}

#if VITC_HAVE_X86_TARGET_KERNELS
void bench_rescale(benchmark::State& state, bool tiles) {
  namespace ed = vitc::engine::detail;
  if (!vitc::kernels::arch::Avx512Vnni::available()) {
    state.SkipWithError("architecture unsupported");
    return;
  }
  const Index rows = 197, d = 192;
  std::vector<double> acc_s(d), in_s(d, 0.02), bias(d), out_s(d, 0.021);
  std::mt19937 rng(1);
  for (Index c = 0; c < d; ++c) {
    acc_s[static_cast<std::size_t>(c)] = 1e-4 * (1.0 + static_cast<double>(rng() % 100) / 100.0);
    bias[static_cast<std::size_t>(c)] = 0.01 * static_cast<double>(c % 7);
  }
  const ed::Rescale r = ed::make_rescale(acc_s, in_s, bias, out_s, -32768, 32767, "bench");
  std::vector<std::int32_t> acc(static_cast<std::size_t>(rows * d));
  std::vector<std::int16_t> x(static_cast<std::size_t>(rows * d));
  for (auto& v : acc) v = static_cast<std::int32_t>(rng() % 2000000) - 1000000;
  for (auto& v : x) v = static_cast<std::int16_t>(static_cast<int>(rng() % 60000) - 30000);
  for (auto _ : state) {
    if (tiles)
      ed::rescale_rows_avx512(r, acc.data(), d, x.data(), d, x.data(), d, rows, d);
    else
      for (Index i = 0; i < rows; ++i)
        ed::rescale_row_avx512(r, acc.data() + i * d, x.data() + i * d, nullptr, x.data() + i * d,
                               d);
    benchmark::DoNotOptimize(x.data());
    benchmark::ClobberMemory();
  }
}

void bench_gelu_lookup(benchmark::State& state, double hi) {
  namespace ed = vitc::engine::detail;
  if (!vitc::kernels::arch::Avx512Vnni::available() || !vitc::cpu_features().avx512vbmi) {
    state.SkipWithError("architecture unsupported");
    return;
  }
  const double so = (hi + 0.17) / 255;
  const ed::GeluTable g =
      ed::make_gelu_table(so, static_cast<std::int32_t>(std::lround(0.17 / so)));
  const ed::BucketTable bt = ed::build_bucket_table(g.codes.data() + 32768);
  const Index rows = 197, cols = 768;
  std::mt19937 rng(3);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<std::int16_t> in(static_cast<std::size_t>(rows * cols));
  for (auto& v : in)
    v = static_cast<std::int16_t>(
        std::clamp<long>(std::lround(normal(rng) / g.scale) + g.zero_point, -32768, 32767));
  std::vector<std::int8_t> out(in.size());
  for (auto _ : state) {
    for (Index i = 0; i < rows; ++i)
      ed::bucket_lookup_avx512vbmi(bt, in.data() + i * cols, out.data() + i * cols, cols);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  state.counters["ups"] = bt.ups;
}

void register_loops() {
  benchmark::RegisterBenchmark("engine/rescale/row/197x192", bench_rescale, false);
  benchmark::RegisterBenchmark("engine/rescale/rows/197x192", bench_rescale, true);
  for (double hi : {1.0, 2.0, 8.0})
    benchmark::RegisterBenchmark(
        ("engine/gelu_lookup/hi" + std::to_string(static_cast<int>(hi)) + "/197x768").c_str(),
        bench_gelu_lookup, hi);
}
#else
void register_loops() {}
#endif

const int registered = (register_all(), register_pruned(), register_loops(), 0);

}  // namespace
