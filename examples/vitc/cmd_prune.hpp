// SPDX-License-Identifier: Apache-2.0
#pragma once
// vitc prune: structured pruning of a ViT checkpoint (heads, MLP units, embedding channels, head
// dimensions, whole blocks) by an importance estimator, optionally iterated and fine-tuned (with
// distillation from the unpruned model), saved as an ordinary, smaller checkpoint.
//
//   vitc prune MODEL --importance magnitude|l1|taylor|hessian-fisher|hessian-hutchinson
//              --ratio R --groups heads,mlp,embed[,qk,v,blocks] [--global | --isomorphic]
//              [--ratio-of channels|params|macs] [--round 8] [--calib N] [--steps K]
//              [--finetune-epochs E] [--distill] -o OUT [--json]

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "cmd_eval.hpp"
#include "cmd_train.hpp"
#include "common.hpp"
#include "progress.hpp"
#include "vitcompress/core/parallel_for.hpp"
#include "vitcompress/io/idx.hpp"
#include "vitcompress/model/image_batches.hpp"
#include "vitcompress/model/train.hpp"
#include "vitcompress/model/trainable_vit.hpp"
#include "vitcompress/model/vit_checkpoint.hpp"
#include "vitcompress/prune/distillation.hpp"
#include "vitcompress/prune/pruner.hpp"
#include "vitcompress/prune/score_groups.hpp"
#include "vitcompress/prune/vit_calibration.hpp"
#include "vitcompress/prune/vit_graph.hpp"
#include "vitcompress/prune/vit_pruner.hpp"

namespace vitc::cli {

struct PruneCliOptions {
  std::string model, output;
  std::string importance = "taylor";
  double ratio = 0;
  std::string ratio_of = "channels";
  std::vector<std::string> groups{"heads", "mlp"};
  bool global = false, isomorphic = false;
  Index round_to = 1;
  std::vector<std::string> protect;
  std::string reduction = "mean", normalizer = "mean";
  bool include_bias = false;
  Index calib = 512, calib_batch = 64;
  int probes = 4;
  double hutchinson_eps = 1e-3;
  int steps = 1;
  int finetune_epochs = 0;
  bool distill = false;
  double alpha = 0.5, temperature = 2.0;
  Index train_limit = 0, eval_limit = 0, latency_runs = 100;
  model::TrainConfig finetune;
  PruneCliOptions() {
    finetune.lr = 3e-4;
    finetune.min_lr = 1e-5;
    finetune.warmup_epochs = 0;
  }
};

inline prune::Estimator parse_estimator(const std::string& s) {
  static const std::map<std::string, prune::Estimator> m{
      {"magnitude", prune::Estimator::kL2},
      {"l2", prune::Estimator::kL2},
      {"l1", prune::Estimator::kL1},
      {"taylor", prune::Estimator::kTaylor},
      {"hessian-fisher", prune::Estimator::kHessianFisher},
      {"hessian-hutchinson", prune::Estimator::kHessianHutchinson}};
  auto it = m.find(s);
  if (it == m.end()) VITC_THROW(ArgumentError("--importance: unknown estimator '" + s + "'"));
  return it->second;
}

inline prune::GroupKind parse_group(const std::string& s) {
  static const std::map<std::string, prune::GroupKind> m{
      {"heads", prune::GroupKind::kHeads},    {"mlp", prune::GroupKind::kHidden},
      {"embed", prune::GroupKind::kResidual}, {"qk", prune::GroupKind::kQueryKeyDims},
      {"v", prune::GroupKind::kValueDims},    {"blocks", prune::GroupKind::kDepth}};
  auto it = m.find(s);
  if (it == m.end())
    VITC_THROW(
        ArgumentError("--groups: unknown group '" + s + "' (heads, mlp, embed, qk, v, blocks)"));
  return it->second;
}

inline const char* group_label(prune::GroupKind k) {
  switch (k) {
    case prune::GroupKind::kHeads:
      return "heads";
    case prune::GroupKind::kHidden:
      return "mlp";
    case prune::GroupKind::kResidual:
      return "embed";
    case prune::GroupKind::kQueryKeyDims:
      return "qk";
    case prune::GroupKind::kValueDims:
      return "v";
    case prune::GroupKind::kDepth:
      return "blocks";
  }
  return "?";
}

inline Json config_summary(const model::ViTConfig& c) {
  Json blocks = Json::array();
  for (const auto& b : c.blocks)
    blocks.push_back({{"heads", b.num_heads},
                      {"qk_head_dim", b.qk_head_dim},
                      {"v_head_dim", b.v_head_dim},
                      {"mlp_hidden", b.mlp_hidden}});
  return Json{{"embed_dim", c.embed_dim},
              {"depth", c.depth()},
              {"parameters", c.parameter_count()},
              {"macs_per_image", c.macs_per_image()},
              {"blocks", blocks}};
}

// Calibration images: the first n training images in batches, normalized as for training.
struct CalibrationSet {
  std::vector<Tensor<float, 4>> images;
  std::vector<Tensor<std::int32_t, 1>> labels;
  std::vector<prune::CalibrationBatch<float>> batches;
};

inline CalibrationSet make_calibration(const model::LabeledImages& data, Index n, Index batch,
                                       const model::ImageNormalization& norm) {
  CalibrationSet set;
  n = std::min(n, data.size());
  const Index h = data.images.extent(1), w = data.images.extent(2);
  for (Index start = 0; start < n; start += batch) {
    const Index b = std::min(batch, n - start);
    std::vector<Index> idx(static_cast<std::size_t>(b));
    for (Index i = 0; i < b; ++i) idx[static_cast<std::size_t>(i)] = start + i;
    Tensor<float, 4> x({b, 1, h, w});
    model::make_image_batch(data.images, idx, norm, {}, nullptr, x.view());
    Tensor<std::int32_t, 1> y({b});
    for (Index i = 0; i < b; ++i) y(i) = data.labels(start + i);
    set.images.push_back(std::move(x));
    set.labels.push_back(std::move(y));
  }
  for (std::size_t i = 0; i < set.images.size(); ++i)
    set.batches.push_back({set.images[i].cview(), set.labels[i].cview()});
  return set;
}

// The estimator, pruning options and scoring of a PruneCliOptions, validated.
struct PruneSetup {
  prune::Estimator estimator{};
  prune::PruneOptions popt;
  prune::ScoreSpec spec;
};

inline PruneSetup prune_setup(const PruneCliOptions& o) {
  if (o.global && o.isomorphic)
    VITC_THROW(ArgumentError("--global and --isomorphic exclude each other"));
  if (o.steps < 1) VITC_THROW(ArgumentError("--steps must be >= 1"));
  const prune::Estimator estimator = parse_estimator(o.importance);
  prune::PruneOptions popt;
  popt.ratio = o.ratio;
  popt.ranking = o.global       ? prune::Ranking::kGlobal
                 : o.isomorphic ? prune::Ranking::kIsomorphic
                                : prune::Ranking::kUniform;
  if (o.ratio_of == "channels")
    popt.unit = prune::RatioUnit::kChannels;
  else if (o.ratio_of == "params")
    popt.unit = prune::RatioUnit::kParameters;
  else if (o.ratio_of == "macs")
    popt.unit = prune::RatioUnit::kMacs;
  else
    VITC_THROW(ArgumentError("--ratio-of: channels, params or macs"));
  popt.round_to = o.round_to;
  popt.protect = o.protect;
  popt.kinds.clear();
  for (const auto& g : o.groups) popt.kinds.push_back(parse_group(g));
  popt.validate();
  prune::ScoreSpec spec;
  spec.estimator = estimator;
  {
    static const std::map<std::string, prune::Reduction> r{{"sum", prune::Reduction::kSum},
                                                           {"mean", prune::Reduction::kMean},
                                                           {"max", prune::Reduction::kMax},
                                                           {"first", prune::Reduction::kFirst}};
    static const std::map<std::string, prune::Normalization> n{
        {"none", prune::Normalization::kNone},
        {"mean", prune::Normalization::kMean},
        {"max", prune::Normalization::kMax},
        {"sum", prune::Normalization::kSum},
        {"lamp", prune::Normalization::kLamp}};
    if (!r.count(o.reduction)) VITC_THROW(ArgumentError("--reduction: sum, mean, max or first"));
    if (!n.count(o.normalizer))
      VITC_THROW(ArgumentError("--normalizer: none, mean, max, sum or lamp"));
    spec.reduction = r.at(o.reduction);
    spec.normalization = n.at(o.normalizer);
  }
  return {estimator, popt, spec};
}

// What prune_and_finetune did: the pruned (fine-tuned) weights and one record per step.
struct PruneRun {
  model::ViTWeights<float> weights;
  Json steps = Json::array();
  double calib_seconds = 0, finetune_seconds = 0;
};

// The pruning steps of `o` on `original`: statistic, scores, plan, physical pruning, optional
// fine-tuning (with distillation from `original` if asked). `top1`, if given, evaluates a model
// after each pruning and fine-tuning (recorded in the steps); `vitc compress` passes none, so
// that no test image is seen before the end.
inline PruneRun prune_and_finetune(
    const PruneCliOptions& o, const PruneSetup& setup, const model::ViTWeights<float>& original,
    const model::LabeledImages& train_data, ThreadPool& pool, bool bars,
    const std::function<double(model::ViTWeights<float>&)>& top1 = {}) {
  const prune::Estimator estimator = setup.estimator;
  const prune::PruneOptions& popt = setup.popt;
  const prune::ScoreSpec& spec = setup.spec;
  const model::ImageNormalization norm = o.finetune.normalization;
  model::ViTWeights<float> current = original;
  const CalibrationSet calib = prune::needs_statistic(estimator)
                                   ? make_calibration(train_data, o.calib, o.calib_batch, norm)
                                   : CalibrationSet{};
  Json steps = Json::array();
  double calib_seconds = 0, finetune_seconds = 0;
  for (int step = 1; step <= o.steps; ++step) {
    const prune::ViTGraph graph = prune::vit_graph(current.config);
    // Statistic for the estimator.
    model::ViTWeights<float> stat;
    const auto t0 = std::chrono::steady_clock::now();
    if (prune::needs_statistic(estimator)) {
      ProgressBar bar("calibrate (" + o.importance + ")", bars);
      auto progress = [&](Index done, Index total) {
        bar.update(static_cast<double>(done) / static_cast<double>(total),
                   std::to_string(done) + "/" + std::to_string(total) + " passes");
      };
      const std::span<const prune::CalibrationBatch<float>> batches(calib.batches);
      if (estimator == prune::Estimator::kTaylor)
        stat = prune::mean_gradient<float>(current, batches, &pool, progress);
      else if (estimator == prune::Estimator::kHessianFisher)
        stat = prune::fisher_diagonal<float>(current, batches, &pool, progress);
      else
        stat = prune::hutchinson_diagonal<float>(current, batches, o.probes, o.hutchinson_eps,
                                                 o.finetune.seed, &pool, progress);
      bar.finish();
    }
    calib_seconds += seconds_since(t0);
    prune::ScoreOptions sopt;
    sopt.include_bias = o.include_bias;
    sopt.which.assign(graph.graph.groups().size(), 0);
    for (std::size_t g = 0; g < graph.graph.groups().size(); ++g)
      sopt.which[g] = std::find(popt.kinds.begin(), popt.kinds.end(),
                                graph.graph.groups()[g].kind) != popt.kinds.end();
    const auto weights_t = prune::param_tensors(current);
    const auto stat_t = prune::needs_statistic(estimator)
                            ? prune::param_tensors(stat)
                            : std::vector<prune::ParamTensor<float>>{};
    const auto scores = prune::score_groups<float>(graph.graph, weights_t, stat_t, spec, sopt);

    prune::PruneOptions step_opt = popt;
    const double original_measure = static_cast<double>(popt.unit == prune::RatioUnit::kMacs
                                                            ? original.config.macs_per_image()
                                                            : original.config.parameter_count());
    const double current_measure = static_cast<double>(popt.unit == prune::RatioUnit::kMacs
                                                           ? current.config.macs_per_image()
                                                           : current.config.parameter_count());
    step_opt.ratio = prune::iterative_step_ratio(o.ratio, step, o.steps, popt.unit,
                                                 original_measure, current_measure);
    const prune::PruningPlan plan = prune::plan_pruning(graph.graph, scores, step_opt);
    std::map<std::string, Index> removed;
    for (std::size_t g = 0; g < plan.removed.size(); ++g)
      removed[group_label(graph.graph.groups()[g].kind)] +=
          static_cast<Index>(plan.removed[g].size());
    current = prune::apply_pruning(current, graph, plan);
    const double before_ft = top1 ? top1(current) : -1;
    if (bars && top1)
      std::fprintf(stderr, "step %d/%d: ratio %.4f, %lld -> %lld parameters, top-1 %.2f%%\n", step,
                   o.steps, step_opt.ratio, static_cast<long long>(plan.parameters_before),
                   static_cast<long long>(plan.parameters_after), 100 * before_ft);
    else if (bars)
      std::fprintf(stderr, "step %d/%d: ratio %.4f, %lld -> %lld parameters\n", step, o.steps,
                   step_opt.ratio, static_cast<long long>(plan.parameters_before),
                   static_cast<long long>(plan.parameters_after));
    Json removed_json = Json::object();
    for (const auto& [k, v] : removed) removed_json[k] = v;
    Json rec{{"step", step},
             {"ratio", step_opt.ratio},
             {"removed_units", removed_json},
             {"parameters", plan.parameters_after},
             {"macs_per_image", plan.macs_after}};
    if (top1) rec["top1_before_finetune"] = before_ft;

    if (o.finetune_epochs > 0) {
      const auto f0 = std::chrono::steady_clock::now();
      model::TrainConfig tc = o.finetune;
      tc.epochs = o.finetune_epochs;
      tc.warmup_epochs = std::min(tc.warmup_epochs, static_cast<double>(tc.epochs));
      ProgressBar bar("fine-tune", bars);
      auto on_progress = [&](const model::TrainProgress& p) {
        char detail[160];
        std::snprintf(detail, sizeof detail, "epoch %d/%d loss %.4f acc %.2f%% ETA %s", p.epoch,
                      p.epochs, p.loss, 100 * p.accuracy, format_duration(p.eta_seconds).c_str());
        bar.update((static_cast<double>(p.epoch - 1) +
                    static_cast<double>(p.step) / static_cast<double>(p.steps_per_epoch)) /
                       p.epochs,
                   detail);
      };
      std::vector<model::EpochResult> results;
      if (o.distill) {
        prune::DistilledViT student(current, original, {o.alpha, o.temperature}, &pool);
        results = model::train(student, train_data, nullptr, tc, on_progress);
      } else {
        model::TrainableViT<> student(current, &pool);
        results = model::train(student, train_data, nullptr, tc, on_progress);
      }
      bar.finish();
      finetune_seconds += seconds_since(f0);
      rec["finetune_epochs"] = tc.epochs;
      if (top1) {
        const double after_ft = top1(current);
        rec["top1_after_finetune"] = after_ft;
        if (bars)
          std::fprintf(stderr, "step %d/%d: fine-tuned %d epochs, top-1 %.2f%%\n", step, o.steps,
                       tc.epochs, 100 * after_ft);
      }
    }
    steps.push_back(rec);
  }
  return {std::move(current), std::move(steps), calib_seconds, finetune_seconds};
}

inline void run_prune(const PruneCliOptions& o, const CommonOptions& common) {
  const auto start = std::chrono::steady_clock::now();
  const bool bars = !common.json && !common.quiet;
  const PruneSetup setup = prune_setup(o);
  const prune::PruneOptions& popt = setup.popt;
  const prune::Estimator estimator = setup.estimator;
  const model::ViTWeights<float> original = model::load_vit<float>(o.model);
  const auto train_set = io::load_fashion_mnist(io::Split::kTrain);
  const auto test_set = io::load_fashion_mnist(io::Split::kTest);
  const auto train_data = labeled(train_set, o.train_limit);
  const auto eval_data = labeled(test_set, o.eval_limit);
  ThreadPool pool(common.threads);
  const model::ImageNormalization norm = o.finetune.normalization;

  const auto top1 = [&](model::ViTWeights<float>& w) {
    model::TrainableViT<> net(w, &pool);
    return model::evaluate_top1(net, eval_data, norm);
  };
  const auto latency = [&](model::ViTWeights<float>& w) {
    model::TrainableViT<> net(w, &pool);
    return measure_latency([&](auto x, auto z) { net.predict(x, z); }, eval_data, norm,
                           net.num_classes(), o.latency_runs);
  };
  model::ViTWeights<float> baseline_copy = original;
  const double baseline_top1 = top1(baseline_copy);
  const Latency baseline_latency = latency(baseline_copy);
  if (bars)
    std::fprintf(stderr, "baseline: top-1 %.2f%%, %lld parameters, %lld MACs\n",
                 100 * baseline_top1, static_cast<long long>(original.config.parameter_count()),
                 static_cast<long long>(original.config.macs_per_image()));

  PruneRun run = prune_and_finetune(o, setup, original, train_data, pool, bars, top1);
  model::ViTWeights<float>& current = run.weights;
  const Json& steps = run.steps;
  const double calib_seconds = run.calib_seconds, finetune_seconds = run.finetune_seconds;

  const double final_top1 = steps.back().contains("top1_after_finetune")
                                ? steps.back()["top1_after_finetune"].get<double>()
                                : steps.back()["top1_before_finetune"].get<double>();
  const Latency final_latency = latency(current);
  Json record{{"source", o.model},
              {"importance", o.importance},
              {"ratio", o.ratio},
              {"ratio_of", o.ratio_of},
              {"ranking", prune::to_string(popt.ranking)},
              {"groups", o.groups},
              {"round", o.round_to},
              {"calibration_images", prune::needs_statistic(estimator) ? o.calib : 0},
              {"steps", o.steps},
              {"finetune_epochs", o.finetune_epochs},
              {"distill", o.distill},
              {"top1", final_top1}};
  model::save_vit(o.output, current, {{"vitc.pruning", record.dump()}});
  const double seconds = seconds_since(start);

  Json out{{"model", o.model},
           {"output", o.output},
           {"importance", o.importance},
           {"ratio", o.ratio},
           {"ratio_of", o.ratio_of},
           {"ranking", prune::to_string(popt.ranking)},
           {"groups", o.groups},
           {"round", o.round_to},
           {"eval_images", eval_data.size()},
           {"baseline",
            {{"top1", baseline_top1},
             {"latency_ms_p50", baseline_latency.p50_ms},
             {"config", config_summary(original.config)}}},
           {"pruned",
            {{"top1", final_top1},
             {"latency_ms_p50", final_latency.p50_ms},
             {"config", config_summary(current.config)}}},
           {"steps", steps},
           {"calibration_seconds", calib_seconds},
           {"finetune_seconds", finetune_seconds},
           {"threads", common.threads},
           {"seconds", seconds}};
  if (common.json) {
    print_json(out);
    return;
  }
  const auto pct = [](double a, double b) { return 100.0 * (1.0 - a / b); };
  std::printf("pruned %s -> %s (%s, ratio %.4g of %s, %s)\n", o.model.c_str(), o.output.c_str(),
              o.importance.c_str(), o.ratio, o.ratio_of.c_str(), prune::to_string(popt.ranking));
  std::printf("                 %14s %14s\n", "before", "after");
  std::printf("top-1            %13.2f%% %13.2f%%\n", 100 * baseline_top1, 100 * final_top1);
  std::printf("parameters       %14lld %14lld  (-%.1f%%)\n",
              static_cast<long long>(original.config.parameter_count()),
              static_cast<long long>(current.config.parameter_count()),
              pct(static_cast<double>(current.config.parameter_count()),
                  static_cast<double>(original.config.parameter_count())));
  std::printf("MACs per image   %14lld %14lld  (-%.1f%%)\n",
              static_cast<long long>(original.config.macs_per_image()),
              static_cast<long long>(current.config.macs_per_image()),
              pct(static_cast<double>(current.config.macs_per_image()),
                  static_cast<double>(original.config.macs_per_image())));
  std::printf("latency p50 (ms) %14.3f %14.3f\n", baseline_latency.p50_ms, final_latency.p50_ms);
  std::printf("embed dim %lld; per block (heads x qk/v head dim, MLP):",
              static_cast<long long>(current.config.embed_dim));
  for (const auto& b : current.config.blocks)
    std::printf(" %lldx%lld/%lld,%lld", static_cast<long long>(b.num_heads),
                static_cast<long long>(b.qk_head_dim), static_cast<long long>(b.v_head_dim),
                static_cast<long long>(b.mlp_hidden));
  std::printf("\n%.1f s\n", seconds);
}

template <class AddCommon>
void register_prune(CLI::App& app, CommonOptions& common, AddCommon add_common) {
  auto o = std::make_shared<PruneCliOptions>();
  auto* sub = app.add_subcommand("prune", "Structured pruning of a ViT checkpoint");
  add_common(sub);
  sub->add_option("model", o->model, "Checkpoint to prune (.safetensors)")
      ->required()
      ->check(CLI::ExistingFile);
  sub->add_option("-o,--output", o->output, "Pruned checkpoint to write")->required();
  sub->add_option("--importance", o->importance,
                  "magnitude (L2/Frobenius), l1, taylor, hessian-fisher, hessian-hutchinson")
      ->capture_default_str();
  sub->add_option("--ratio", o->ratio, "Fraction to remove, in [0, 1)")->required();
  sub->add_option("--ratio-of", o->ratio_of, "What the ratio counts: channels, params, macs")
      ->capture_default_str();
  sub->add_option("--groups", o->groups, "Groups to prune: heads, mlp, embed, qk, v, blocks")
      ->delimiter(',')
      ->capture_default_str();
  sub->add_flag("--global", o->global, "Rank units across all layers");
  sub->add_flag("--isomorphic", o->isomorphic,
                "Rank globally among structurally identical groups only");
  sub->add_option("--round", o->round_to, "Keep channel counts a multiple of N")
      ->check(CLI::Range(Index{1}, Index{4096}))
      ->capture_default_str();
  sub->add_option("--protect", o->protect, "Names not to prune (tensors, groups, blocks)")
      ->delimiter(',');
  sub->add_option("--reduction", o->reduction, "Group reduction: sum, mean, max, first")
      ->capture_default_str();
  sub->add_option("--normalizer", o->normalizer, "Normalizer: none, mean, max, sum, lamp")
      ->capture_default_str();
  sub->add_flag("--bias", o->include_bias, "Also score biases and LayerNorm shifts");
  sub->add_option("--calib", o->calib, "Calibration images (taylor, hessian-*)")
      ->check(CLI::Range(Index{1}, Index{60000}))
      ->capture_default_str();
  sub->add_option("--calib-batch", o->calib_batch, "Calibration batch size")
      ->check(CLI::Range(Index{1}, Index{4096}))
      ->capture_default_str();
  sub->add_option("--probes", o->probes, "Hutchinson probes per calibration batch")
      ->check(CLI::Range(1, 100000))
      ->capture_default_str();
  sub->add_option("--eps", o->hutchinson_eps, "Hutchinson finite-difference step")
      ->capture_default_str();
  sub->add_option("--steps", o->steps, "Iterative pruning: prune (and fine-tune) in K steps")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  sub->add_option("--finetune-epochs", o->finetune_epochs, "Fine-tuning epochs after each step")
      ->check(CLI::Range(0, 100000))
      ->capture_default_str();
  sub->add_flag("--distill", o->distill, "Fine-tune with distillation from the unpruned model");
  sub->add_option("--alpha", o->alpha, "Distillation: weight of the teacher term")
      ->capture_default_str();
  sub->add_option("--temperature", o->temperature, "Distillation temperature")
      ->capture_default_str();
  sub->add_option("--lr", o->finetune.lr, "Fine-tuning peak learning rate")->capture_default_str();
  sub->add_option("--batch", o->finetune.batch_size, "Fine-tuning batch size")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  sub->add_option("--seed", o->finetune.seed, "Seed (fine-tuning order, Hutchinson probes)")
      ->capture_default_str();
  sub->add_option("--train-limit", o->train_limit,
                  "Use only the first N training images (calibration, fine-tuning; 0: all)")
      ->capture_default_str();
  sub->add_option("--eval-limit", o->eval_limit, "Evaluate on the first N test images (0: all)")
      ->check(CLI::Range(Index{0}, Index{10000}))
      ->capture_default_str();
  sub->add_option("--latency-runs", o->latency_runs, "Batch-1 forwards to time")
      ->check(CLI::Range(Index{1}, Index{1000000}))
      ->capture_default_str();
  sub->callback([o, &common] { run_prune(*o, common); });
}

}  // namespace vitc::cli
