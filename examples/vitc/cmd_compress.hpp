// SPDX-License-Identifier: Apache-2.0
#pragma once
// vitc compress: prune → fine-tune → calibrate (→ QAT) → one compressed checkpoint
// (engine/compressed_checkpoint.hpp) that vitc eval / run / bench load into the integer engine.
//
//   vitc compress MODEL --prune R --importance taylor --quant w8a8|w4a8|... [--groups heads,mlp]
//                 [--finetune-epochs E] [--qat-epochs E] [--calib N] [--eval] [--json] -o OUT
//
// The pruning and fine-tuning are vitc prune's (cmd_prune.hpp), the calibration and QAT vitc
// quantize's (cmd_quantize.hpp), with their options. No test image is seen before the end: with
// --eval the saved file is loaded back, evaluated on the test split (by the integer engine when it
// supports the configuration, else by the fake-quant simulation) and the measured top-1 is
// recorded in the file's "vitc.compressed" entry.

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "cmd_prune.hpp"
#include "cmd_quantize.hpp"
#include "common.hpp"
#include "runner.hpp"
#include "vitcompress/core/parallel_for.hpp"
#include "vitcompress/engine/compressed_checkpoint.hpp"
#include "vitcompress/io/idx.hpp"
#include "vitcompress/model/vit_checkpoint.hpp"
#include "vitcompress/quant/fake_quant_vit.hpp"

namespace vitc::cli {

struct CompressOptions {
  std::string model, output;
  PruneCliOptions prune;     // ratio, importance, groups, round, fine-tuning
  QuantizeOptions quantize;  // config, calibration, QAT
  bool eval = false;
  Index eval_limit = 0;
};

struct CompressResult {
  engine::CompressionInfo info;
  double prune_seconds = 0, quantize_seconds = 0;
  Json prune_steps = Json::array();
  Json quantization;
};

// The whole job, without printing (progress bars on stderr if `bars`): writes o.output.
inline CompressResult compress_model(const CompressOptions& o, int threads, bool bars) {
  const quant::QuantConfig config = quant_config_from_option(o.quantize.config);
  const PruneSetup setup = prune_setup(o.prune);  // validates the pruning options first
  model::ViTWeights<float> original = model::load_vit<float>(o.model);
  const auto train_set = io::load_fashion_mnist(io::Split::kTrain);
  ThreadPool pool(threads);
  CompressResult result;
  auto& info = result.info;
  info.source_parameters = original.config.parameter_count();
  info.source_macs = original.config.macs_per_image();
  info.source_file = o.model;
  info.prune_ratio = o.prune.ratio;
  info.importance = o.prune.ratio > 0 ? o.prune.importance : "none";
  info.groups = o.prune.ratio > 0 ? o.prune.groups : std::vector<std::string>{};
  info.round_to = o.prune.round_to;
  info.finetune_epochs = o.prune.finetune_epochs;
  info.qat_epochs = o.quantize.qat_epochs;
  info.calibration_images = o.quantize.calib;
  info.quant_config = config.name;

  model::ViTWeights<float> weights;
  const auto t0 = std::chrono::steady_clock::now();
  if (o.prune.ratio > 0 || o.prune.finetune_epochs > 0) {
    const auto train_data = labeled(train_set, o.prune.train_limit);
    PruneRun run = prune_and_finetune(o.prune, setup, original, train_data, pool, bars);
    weights = std::move(run.weights);
    result.prune_steps = std::move(run.steps);
  } else {
    weights = std::move(original);
  }
  result.prune_seconds = seconds_since(t0);

  const auto t1 = std::chrono::steady_clock::now();
  quant::FakeQuantViT fq(std::move(weights), config, &pool);
  QuantizeRun q = calibrate_and_train(fq, o.quantize, train_set, threads, bars);
  result.quantization = std::move(q.record);
  result.quantize_seconds = seconds_since(t1);
  engine::save_compressed(o.output, fq, info,
                          {{"vitc.quant.calibration", result.quantization.dump()}});
  return result;
}

inline void run_compress(const CompressOptions& o, const CommonOptions& common) {
  const auto start = std::chrono::steady_clock::now();
  const bool bars = !common.json && !common.quiet;
  CompressResult r = compress_model(o, common.threads, bars);

  Json accuracy = nullptr;
  std::string runs_on;
  if (o.eval) {
    // Load what was written (the round trip is part of the job), evaluate, record the result.
    ThreadPool pool(common.threads);
    constexpr Index kEvalBatch = 256;
    ModelRunner runner(o.output, kEvalBatch, &pool);
    const auto test_set = io::load_fashion_mnist(io::Split::kTest);
    const auto test_data = labeled(test_set, o.eval_limit);
    const double top1 = model::evaluate_top1(runner, test_data, {}, kEvalBatch);
    runs_on = runner.runs_on();
    r.info.top1 = top1;
    r.info.top1_images = test_data.size();
    r.info.measured_by = runs_on == kRunsOnEngine ? "engine" : "fake-quant simulation";
    engine::save_compressed(o.output, *runner.fake_quant(), r.info,
                            {{"vitc.quant.calibration", r.quantization.dump()}});
    accuracy = Json{{"top1", top1}, {"test_images", test_data.size()}, {"runs_on", runs_on}};
    if (!runner.engine_note().empty()) accuracy["engine_note"] = runner.engine_note();
  }
  const auto loaded = engine::load_compressed(o.output);  // validates the final file
  const auto& c = loaded.model.master_weights().config;
  const auto bytes = file_bytes(o.output);
  const auto source_bytes = file_bytes(o.model);
  Json out{{"model", o.model},
           {"output", o.output},
           {"compression", compression_json(loaded.info)},
           {"source",
            {{"parameters", r.info.source_parameters},
             {"macs_per_image", r.info.source_macs},
             {"model_bytes", source_bytes}}},
           {"compressed",
            {{"parameters", c.parameter_count()},
             {"macs_per_image", c.macs_per_image()},
             {"model_bytes", bytes},
             {"config", config_summary(c)}}},
           {"accuracy", accuracy},
           {"prune_steps", r.prune_steps},
           {"prune_seconds", r.prune_seconds},
           {"quantize_seconds", r.quantize_seconds},
           {"quantization", r.quantization},
           {"threads", common.threads},
           {"seconds", seconds_since(start)}};
  if (common.json) {
    print_json(out);
    return;
  }
  const auto ratio = [](double a, double b) { return a / b; };
  std::printf("compressed %s -> %s (prune %.4g%% %s, %s, fine-tune %d ep, QAT %d ep)\n",
              o.model.c_str(), o.output.c_str(), 100 * o.prune.ratio, r.info.importance.c_str(),
              r.info.quant_config.c_str(), r.info.finetune_epochs, r.info.qat_epochs);
  std::printf("                 %14s %14s\n", "source", "compressed");
  std::printf("parameters       %14lld %14lld  (%.3fx)\n",
              static_cast<long long>(r.info.source_parameters),
              static_cast<long long>(c.parameter_count()),
              ratio(static_cast<double>(c.parameter_count()),
                    static_cast<double>(r.info.source_parameters)));
  std::printf(
      "MACs per image   %14lld %14lld  (%.3fx)\n", static_cast<long long>(r.info.source_macs),
      static_cast<long long>(c.macs_per_image()),
      ratio(static_cast<double>(c.macs_per_image()), static_cast<double>(r.info.source_macs)));
  std::printf("file bytes       %14llu %14llu  (%.2fx smaller)\n",
              static_cast<unsigned long long>(source_bytes), static_cast<unsigned long long>(bytes),
              ratio(static_cast<double>(source_bytes), static_cast<double>(bytes)));
  if (o.eval)
    std::printf("top-1            %.2f%% on %lld test images (%s)\n", 100 * *loaded.info.top1,
                static_cast<long long>(loaded.info.top1_images), runs_on.c_str());
  std::printf("%.1f s (pruning and fine-tuning %.1f s, calibration and QAT %.1f s)\n",
              seconds_since(start), r.prune_seconds, r.quantize_seconds);
}

template <class AddCommon>
void register_compress(CLI::App& app, CommonOptions& common, AddCommon add_common) {
  auto o = std::make_shared<CompressOptions>();
  auto* sub = app.add_subcommand(
      "compress", "Prune, fine-tune and quantize a float checkpoint into a compressed checkpoint");
  add_common(sub);
  sub->add_option("model", o->model, "Float checkpoint (.safetensors)")
      ->required()
      ->check(CLI::ExistingFile);
  sub->add_option("-o,--output", o->output, "Compressed checkpoint to write")->required();
  sub->add_option("--prune", o->prune.ratio, "Fraction of each group's units removed, in [0, 1)")
      ->check(CLI::Range(0.0, 0.999999))
      ->capture_default_str();
  sub->add_option("--importance", o->prune.importance,
                  "magnitude (L2), l1, taylor, hessian-fisher, hessian-hutchinson")
      ->capture_default_str();
  sub->add_option("--groups", o->prune.groups, "Groups to prune: heads, mlp, embed, qk, v, blocks")
      ->delimiter(',')
      ->capture_default_str();
  sub->add_option("--round", o->prune.round_to, "Keep channel counts a multiple of N")
      ->check(CLI::Range(Index{1}, Index{4096}))
      ->capture_default_str();
  sub->add_option("--prune-calib", o->prune.calib, "Images for the importance statistic")
      ->check(CLI::Range(Index{1}, Index{60000}))
      ->capture_default_str();
  sub->add_option("--finetune-epochs", o->prune.finetune_epochs, "Fine-tuning epochs after pruning")
      ->check(CLI::Range(0, 100000))
      ->capture_default_str();
  sub->add_flag("--distill", o->prune.distill, "Fine-tune with distillation from the source");
  sub->add_option("--lr", o->prune.finetune.lr, "Fine-tuning peak learning rate")
      ->capture_default_str();
  sub->add_option("--seed", o->prune.finetune.seed, "Fine-tuning seed")->capture_default_str();
  sub->add_option("--train-limit", o->prune.train_limit,
                  "Prune statistic and fine-tuning on the first N training images (0: all)")
      ->check(CLI::Range(Index{0}, Index{60000}))
      ->capture_default_str();
  sub->add_option("--quant", o->quantize.config,
                  "fp16, w8a8, w8a8-log2attn, w4a8, w4a8-log2attn, w4a4, or a JSON file")
      ->capture_default_str();
  sub->add_option("--calib", o->quantize.calib, "Calibration images (first N training images)")
      ->check(CLI::Range(Index{1}, Index{60000}))
      ->capture_default_str();
  sub->add_option("--qat-epochs", o->quantize.qat_epochs, "Quantization-aware training epochs")
      ->check(CLI::Range(0, 1000))
      ->capture_default_str();
  sub->add_option("--qat-lr", o->quantize.qat_lr, "QAT peak learning rate")->capture_default_str();
  sub->add_flag("--flip", o->quantize.flip, "QAT: random horizontal flips");
  sub->add_flag("--eval", o->eval,
                "Evaluate the result on the test split and record the top-1 in the file");
  sub->add_option("--eval-limit", o->eval_limit, "With --eval: only the first N test images")
      ->check(CLI::Range(Index{0}, Index{10000}))
      ->capture_default_str();
  sub->callback([o, &common] {
    o->quantize.model = o->model;
    o->quantize.train_limit = o->prune.train_limit;
    run_compress(*o, common);
  });
}

}  // namespace vitc::cli
