// SPDX-License-Identifier: Apache-2.0
#pragma once
// `vitc profile MODEL`: where the integer engine's time goes, per stage and per block (the
// per-layer latency breakdown of PQV-Mobile's Figure 3), with the fp32 forward of the same
// weights beside it.
//
// MODEL is a quantized checkpoint (`vitc quantize`; its calibrated scales are used), a float
// checkpoint, or the name of a built-in shape (deit_tiny, deit_small, deit_base,
// fashion_mnist_vit: random weights, seed 1). A float model is quantized with --quant (default
// w8a8) and calibrated on two random N(0, 1) images: latency does not depend on the calibration,
// accuracy is not measured here (`vitc eval`). The engine runs --runs timed passes after --warmup
// untimed ones on a batch of --batch random images.

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "cmd_quantize.hpp"
#include "common.hpp"
#include "vitcompress/core/error.hpp"
#include "vitcompress/core/parallel_for.hpp"
#include "vitcompress/engine/int_vit.hpp"
#include "vitcompress/engine/stage_profile.hpp"
#include "vitcompress/io/safetensors.hpp"
#include "vitcompress/model/packed_vit.hpp"
#include "vitcompress/model/vit_checkpoint.hpp"
#include "vitcompress/model/vit_forward.hpp"
#include "vitcompress/quant/fake_quant_vit.hpp"
#include "vitcompress/quant/quantized_checkpoint.hpp"

namespace vitc::cli {

struct ProfileOptions {
  std::string model;
  std::string quant = "w8a8";
  int runs = 20;
  int warmup = 2;
  Index batch = 1;
  bool no_fp32 = false;
};

namespace profile_detail {

inline Tensor<float, 4> random_images(const model::ViTConfig& c, Index batch, std::uint64_t seed) {
  Tensor<float, 4> images({batch, c.in_channels, c.image_size, c.image_size});
  model::detail::NormalSampler rng(seed);
  for (float& v : images.span()) v = static_cast<float>(rng.next());
  return images;
}

// A float model quantized with `config` and calibrated on two random images through its hooks.
inline std::unique_ptr<quant::FakeQuantViT> calibrate_random(model::ViTWeights<float> weights,
                                                             const std::string& config) {
  auto fq =
      std::make_unique<quant::FakeQuantViT>(std::move(weights), quant_config_from_option(config));
  fq->quantize_weights();
  const auto& c = fq->master_weights().config;
  const auto images = random_images(c, 2, 3);
  Tensor<float, 2> logits({2, c.num_classes});
  model::ViTWorkspace<float> ws;
  fq->hooks().set_mode(quant::FakeQuantHooks::Mode::kObserve);
  model::vit_forward(fq->simulated_weights(), images.cview(), logits.view(), ws, nullptr,
                     model::Pass::kInference, fq->hooks());
  fq->hooks().finish_calibration();
  return fq;
}

// Random weights of a built-in shape or a float checkpoint, quantized and calibrated; null for a
// quantized checkpoint (loaded by the caller).
inline std::unique_ptr<quant::FakeQuantViT> load_for_profile(const ProfileOptions& o,
                                                             std::string& source) {
  if (!std::filesystem::exists(o.model)) {
    model::ViTConfig c;
    if (o.model == "deit_tiny")
      c = model::ViTConfig::deit_tiny();
    else if (o.model == "deit_small")
      c = model::ViTConfig::deit_small();
    else if (o.model == "deit_base")
      c = model::ViTConfig::deit_base();
    else if (o.model == "fashion_mnist_vit")
      c = model::ViTConfig::fashion_mnist_vit();
    else
      VITC_THROW(IoError("profile: MODEL '" + o.model +
                         "' is neither a file nor one of deit_tiny, deit_small, deit_base, "
                         "fashion_mnist_vit"));
    source = "random weights (" + o.model + " shape), " + o.quant + " calibrated on 2 images";
    return calibrate_random(model::ViTWeights<float>::random(c, 1), o.quant);
  }
  if (quant::is_quantized_checkpoint(io::SafetensorsReader::open(o.model))) {
    source = "quantized checkpoint";
    return nullptr;
  }
  source = "float checkpoint, " + o.quant + " calibrated on 2 random images";
  return calibrate_random(model::load_vit(o.model), o.quant);
}

inline double ms_per_run(std::int64_t ns, std::int64_t runs) {
  return runs > 0 ? static_cast<double>(ns) * 1e-6 / static_cast<double>(runs) : 0.0;
}

}  // namespace profile_detail

inline void profile_model(const quant::FakeQuantViT& fqm, const std::string& source,
                          const ProfileOptions& o, const CommonOptions& common) {
  using engine::Stage;
  const quant::FakeQuantViT* fq = &fqm;
  const auto& cfg = fq->master_weights().config;
  ThreadPool pool(common.threads);
  engine::IntViT<> eng(*fq, o.batch, &pool);
  const auto images = profile_detail::random_images(cfg, o.batch, 7);
  Tensor<float, 2> logits({o.batch, cfg.num_classes});

  // Plain runs (no timing inside) for the true latency, then the profiled runs.
  for (int i = 0; i < o.warmup; ++i) eng.run(images.cview(), logits.view());
  std::vector<double> plain;
  for (int i = 0; i < o.runs; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    eng.run(images.cview(), logits.view());
    plain.push_back(seconds_since(t0) * 1e3);
  }
  std::sort(plain.begin(), plain.end());
  const double p50 = plain[plain.size() / 2];
  // One profile per run; each cell of the table is its median over the runs (robust to the
  // preemptions of a shared machine).
  const int depth = static_cast<int>(cfg.blocks.size());
  std::vector<engine::StageProfile> per_run(static_cast<std::size_t>(o.runs),
                                            engine::StageProfile(depth));
  for (auto& p : per_run) eng.run(images.cview(), logits.view(), p);
  engine::StageProfile prof(depth);
  prof.add_run();
  std::vector<std::int64_t> cell(per_run.size());
  for (int l = -1; l < depth; ++l)
    for (int s = 0; s < engine::kStageCount; ++s) {
      for (std::size_t r = 0; r < per_run.size(); ++r)
        cell[r] = per_run[r].at(static_cast<Stage>(s), l).ns;
      std::nth_element(cell.begin(), cell.begin() + static_cast<std::ptrdiff_t>(cell.size() / 2),
                       cell.end());
      prof.at(static_cast<Stage>(s), l) = {cell[cell.size() / 2],
                                           per_run[0].at(static_cast<Stage>(s), l).calls};
    }

  double fp32_p50 = 0.0;
  if (!o.no_fp32) {
    model::PackedViT fp32(fq->master_weights());  // the fastest float path
    fp32.forward(images.cview(), logits.view(), &pool);
    std::vector<double> t;
    for (int i = 0; i < o.runs; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      fp32.forward(images.cview(), logits.view(), &pool);
      t.push_back(seconds_since(t0) * 1e3);
    }
    std::sort(t.begin(), t.end());
    fp32_p50 = t[t.size() / 2];
  }

  const std::int64_t runs = prof.runs();
  const double total = profile_detail::ms_per_run(prof.total_ns(), runs);
  if (common.json) {
    Json stages = Json::object();
    for (int s = 0; s < engine::kStageCount; ++s)
      stages[std::string(engine::stage_name(static_cast<Stage>(s)))] =
          profile_detail::ms_per_run(prof.stage_ns(static_cast<Stage>(s)), runs);
    Json blocks = Json::array();
    for (int l = 0; l < depth; ++l) {
      Json st = Json::object();
      for (int s = 0; s < engine::kStageCount; ++s) {
        const auto& v = prof.at(static_cast<Stage>(s), l);
        if (v.calls > 0)
          st[std::string(engine::stage_name(static_cast<Stage>(s)))] =
              profile_detail::ms_per_run(v.ns, runs);
      }
      blocks.push_back(Json{{"block", l},
                            {"ms", profile_detail::ms_per_run(prof.block_ns(l), runs)},
                            {"stages", st}});
    }
    Json out{{"model", o.model},     {"source", source},          {"precision", fq->config().name},
             {"batch", o.batch},     {"threads", common.threads}, {"runs", o.runs},
             {"engine_ms_p50", p50}, {"stages_sum_ms", total},    {"stages_ms", stages},
             {"blocks", blocks}};
    if (!o.no_fp32) {
      out["fp32_ms_p50"] = fp32_p50;
      out["speedup_vs_fp32"] = fp32_p50 / p50;
    }
    print_json(out);
    return;
  }
  std::printf("model     %s (%s)\n", o.model.c_str(), source.c_str());
  std::printf("engine    %s, batch %lld, %d thread(s), %d runs: p50 %.3f ms",
              fq->config().name.c_str(), static_cast<long long>(o.batch), common.threads, o.runs,
              p50);
  if (!o.no_fp32) std::printf("   (fp32 forward p50 %.3f ms, %.2fx)", fp32_p50, fp32_p50 / p50);
  std::printf("\n\nmedian over the runs of each stage:\n%-14s %10s %7s\n", "stage", "ms/run",
              "share");
  for (int s = 0; s < engine::kStageCount; ++s) {
    const double ms = profile_detail::ms_per_run(prof.stage_ns(static_cast<Stage>(s)), runs);
    std::printf("%-14s %10.3f %6.1f%%\n",
                std::string(engine::stage_name(static_cast<Stage>(s))).c_str(), ms,
                total > 0 ? 100.0 * ms / total : 0.0);
  }
  std::printf("%-14s %10.3f\n\nper block, ms/run (medians):\n%-5s", "sum", total, "block");
  for (int s = static_cast<int>(Stage::kNorm1); s <= static_cast<int>(Stage::kFc2Residual); ++s)
    std::printf(" %9.9s", std::string(engine::stage_name(static_cast<Stage>(s))).c_str());
  std::printf(" %9s\n", "total");
  for (int l = 0; l < depth; ++l) {
    std::printf("%-5d", l);
    for (int s = static_cast<int>(Stage::kNorm1); s <= static_cast<int>(Stage::kFc2Residual); ++s)
      std::printf(" %9.3f", profile_detail::ms_per_run(prof.at(static_cast<Stage>(s), l).ns, runs));
    std::printf(" %9.3f\n", profile_detail::ms_per_run(prof.block_ns(l), runs));
  }
}

inline void run_profile(const ProfileOptions& o, const CommonOptions& common) {
  if (o.runs < 1) VITC_THROW(ArgumentError("profile: --runs must be >= 1"));
  if (o.batch < 1) VITC_THROW(ArgumentError("profile: --batch must be >= 1"));
  std::string source;
  const auto fq = profile_detail::load_for_profile(o, source);
  if (fq) {
    profile_model(*fq, source, o, common);
  } else {
    const quant::FakeQuantViT loaded = quant::load_quantized(o.model);
    profile_model(loaded, source, o, common);
  }
}

template <class AddCommon>
void register_profile(CLI::App& app, CommonOptions& common, AddCommon add_common) {
  auto o = std::make_shared<ProfileOptions>();
  auto* sub = app.add_subcommand(
      "profile", "Per-stage and per-block latency of the integer engine (and fp32 beside it)");
  add_common(sub);
  sub->add_option("model", o->model,
                  "Quantized or float checkpoint, or deit_tiny|deit_small|deit_base|"
                  "fashion_mnist_vit (random weights)")
      ->required();
  sub->add_option("--quant", o->quant,
                  "Configuration for a float model: a name or a JSON file (as vitc quantize)")
      ->capture_default_str();
  sub->add_option("--runs", o->runs, "Timed runs")
      ->check(CLI::Range(1, 100000))
      ->capture_default_str();
  sub->add_option("--warmup", o->warmup, "Untimed runs first")
      ->check(CLI::Range(0, 1000))
      ->capture_default_str();
  sub->add_option("--batch", o->batch, "Images per run")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  sub->add_flag("--no-fp32", o->no_fp32, "Skip the fp32 forward");
  sub->callback([o, &common] { run_profile(*o, common); });
}

}  // namespace vitc::cli
