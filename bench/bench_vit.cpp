// SPDX-License-Identifier: Apache-2.0
// End-to-end float ViT forward latency: vit/<model>/fp32/b<batch>/t<threads>.
//
//   model    shipped (the Fashion-MNIST ViT: the checkpoint under models/ when present, otherwise
//            its config with random weights), deit_tiny, deit_small, deit_base (224x224, patch 16,
//            random weights from a fixed seed)
//   batch    1, 8;  threads 1, 2 (a ThreadPool; Eigen itself stays single-threaded)
//
// Counters: images/s (rate), GMACs per image. The first pass (workspace allocation) runs before
// the timed loop. This is the fp32 baseline later speed-ups are measured against; compare one core
// at batch 1 with ONNX Runtime fp32 (shared/peers/ort).
#include <benchmark/benchmark.h>

#include <filesystem>
#include <map>
#include <memory>
#include <string>

#include "vitcompress/model/vit_checkpoint.hpp"
#include "vitcompress/model/vit_forward.hpp"

namespace {

using vitc::Tensor;
namespace model = vitc::model;

const model::ViTWeights<float>& weights_for(const std::string& name) {
  static std::map<std::string, std::unique_ptr<model::ViTWeights<float>>> cache;
  auto& slot = cache[name];
  if (!slot) {
    if (name == "shipped") {
      const std::filesystem::path ckpt =
          std::filesystem::path(VITC_SOURCE_DIR) / "models" / "fashion_mnist_vit.safetensors";
      if (std::filesystem::exists(ckpt))
        slot = std::make_unique<model::ViTWeights<float>>(model::load_vit(ckpt));
      else
        slot = std::make_unique<model::ViTWeights<float>>(
            model::ViTWeights<float>::random(model::ViTConfig::fashion_mnist_vit(), 1));
    } else {
      const model::ViTConfig cfg = name == "deit_tiny"    ? model::ViTConfig::deit_tiny()
                                   : name == "deit_small" ? model::ViTConfig::deit_small()
                                                          : model::ViTConfig::deit_base();
      slot = std::make_unique<model::ViTWeights<float>>(model::ViTWeights<float>::random(cfg, 1));
    }
  }
  return *slot;
}

void bench_vit_fp32(benchmark::State& state, const std::string& name, vitc::Index batch,
                    int threads) {
  const auto& w = weights_for(name);
  const auto& c = w.config;
  Tensor<float, 4> images({batch, c.in_channels, c.image_size, c.image_size});
  model::detail::NormalSampler rng(7);
  for (float& v : images.span()) v = static_cast<float>(rng.next());
  Tensor<float, 2> logits({batch, c.num_classes});
  vitc::ThreadPool pool(threads);
  model::ViTWorkspace<float> ws;
  model::vit_forward(w, images.view(), logits.view(), ws, &pool);  // allocate outside the loop
  for (auto _ : state) {
    model::vit_forward(w, images.view(), logits.view(), ws, &pool);
    benchmark::DoNotOptimize(logits.data());
    benchmark::ClobberMemory();
  }
  state.counters["images/s"] =
      benchmark::Counter(static_cast<double>(batch), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GMACs/image"] = static_cast<double>(c.macs_per_image()) * 1e-9;
}

void register_all() {
  for (const char* name : {"shipped", "deit_tiny", "deit_small", "deit_base"})
    for (int batch : {1, 8})
      for (int threads : {1, 2}) {
        const std::string label = std::string("vit/") + name + "/fp32/b" + std::to_string(batch) +
                                  "/t" + std::to_string(threads);
        auto* b = benchmark::RegisterBenchmark(label.c_str(), [name = std::string(name), batch,
                                                               threads](benchmark::State& state) {
                    bench_vit_fp32(state, name, batch, threads);
                  })->Unit(benchmark::kMillisecond);
        if (threads > 1) b->UseRealTime();
      }
}

const int registered = (register_all(), 0);

}  // namespace
