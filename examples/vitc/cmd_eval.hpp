// SPDX-License-Identifier: Apache-2.0
#pragma once
// vitc eval: top-1 on the Fashion-MNIST test set, parameters, MACs per image, model bytes, and
// batch-1 latency of the float model.

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "cmd_train.hpp"
#include "common.hpp"
#include "vitcompress/core/parallel_for.hpp"
#include "vitcompress/io/idx.hpp"
#include "vitcompress/model/packed_vit.hpp"
#include "vitcompress/model/train.hpp"
#include "vitcompress/model/trainable_vit.hpp"
#include "vitcompress/model/vit_checkpoint.hpp"

namespace vitc::cli {

struct EvalOptions {
  std::string model;
  Index limit = 0;           // evaluate the first N test images (0: all 10,000)
  Index latency_runs = 200;  // batch-1 forward passes timed
  bool simulate = false;     // quantized models: the fake-quant simulation, not the engine
};

struct Latency {
  double p50_ms = 0, p90_ms = 0;
};

// Median and 90th percentile of `runs` batch-1 forwards over successive test images.
template <class Predict>
Latency measure_latency(Predict&& predict, const model::LabeledImages& data,
                        const model::ImageNormalization& norm, Index classes, Index runs) {
  Tensor<float, 4> image({1, 1, data.images.extent(1), data.images.extent(2)});
  Tensor<float, 2> logits({1, classes});
  std::vector<double> ms;
  for (Index r = 0; r < runs + 10; ++r) {  // 10 warm-up runs
    const Index idx = r % data.size();
    make_image_batch(data.images, std::span<const Index>(&idx, 1), norm, {}, nullptr, image.view());
    const auto t0 = std::chrono::steady_clock::now();
    predict(image.cview(), logits.view());
    if (r >= 10) ms.push_back(1e3 * seconds_since(t0));
  }
  std::sort(ms.begin(), ms.end());
  if (ms.empty()) return {};
  return {ms[ms.size() / 2], ms[std::min(ms.size() - 1, ms.size() * 9 / 10)]};
}

// Quantized checkpoints ("vitc.quant" metadata) are evaluated by cmd_quantize.hpp.
inline bool is_quantized_model(const std::string& path);
inline void run_eval_quantized(const EvalOptions& o, const CommonOptions& common);

inline void run_eval(const EvalOptions& o, const CommonOptions& common) {
  if (is_quantized_model(o.model)) return run_eval_quantized(o, common);
  auto weights = model::load_vit<float>(o.model);
  const auto test_set = io::load_fashion_mnist(io::Split::kTest);
  const auto test_data = labeled(test_set, o.limit);
  ThreadPool pool(common.threads);
  model::TrainableViT<> net(weights, &pool);
  const model::ImageNormalization norm;
  const auto t0 = std::chrono::steady_clock::now();
  const double top1 = model::evaluate_top1(net, test_data, norm);
  const double eval_seconds = seconds_since(t0);
  // Latency of the inference path: weights packed once (model::PackedViT).
  model::PackedViT fast(weights);
  const auto latency = measure_latency([&](auto x, auto z) { fast.forward(x, z, &pool); },
                                       test_data, norm, net.num_classes(), o.latency_runs);
  const auto bytes = file_bytes(o.model);
  Json out{{"model", o.model},
           {"precision", "fp32"},
           {"test_images", test_data.size()},
           {"top1", top1},
           {"parameters", weights.config.parameter_count()},
           {"macs_per_image", weights.config.macs_per_image()},
           {"model_bytes", bytes},
           {"latency_ms_p50", latency.p50_ms},
           {"latency_ms_p90", latency.p90_ms},
           {"threads", common.threads},
           {"eval_seconds", eval_seconds},
           {"peak_rss_bytes", peak_rss_bytes()}};
  if (common.json) {
    print_json(out);
    return;
  }
  std::printf("model            %s (fp32)\n", o.model.c_str());
  std::printf("top-1            %.2f%% on %lld test images\n", 100 * top1,
              static_cast<long long>(test_data.size()));
  std::printf("parameters       %lld\n", static_cast<long long>(weights.config.parameter_count()));
  std::printf("MACs per image   %lld\n", static_cast<long long>(weights.config.macs_per_image()));
  std::printf("model bytes      %s (%llu B)\n", human_bytes(static_cast<double>(bytes)).c_str(),
              static_cast<unsigned long long>(bytes));
  std::printf("latency, batch 1 p50 %.3f ms, p90 %.3f ms (%d threads)\n", latency.p50_ms,
              latency.p90_ms, common.threads);
  std::printf("peak RSS         %s\n", human_bytes(static_cast<double>(peak_rss_bytes())).c_str());
}

template <class AddCommon>
void register_eval(CLI::App& app, CommonOptions& common, AddCommon add_common) {
  auto o = std::make_shared<EvalOptions>();
  auto* sub = app.add_subcommand("eval", "Evaluate a model on the Fashion-MNIST test set");
  add_common(sub);
  sub->add_option("model", o->model, "Checkpoint (.safetensors)")->required();
  sub->add_option("--limit", o->limit, "Only the first N test images (0: all)")
      ->check(CLI::Range(Index{0}, Index{10000}))
      ->capture_default_str();
  sub->add_option("--latency-runs", o->latency_runs, "Batch-1 forwards to time")
      ->check(CLI::Range(Index{0}, Index{1000000}))
      ->capture_default_str();
  sub->add_flag("--simulate", o->simulate,
                "Quantized models: run the fake-quant simulation instead of the integer engine");
  sub->callback([o, &common] { run_eval(*o, common); });
}

}  // namespace vitc::cli
