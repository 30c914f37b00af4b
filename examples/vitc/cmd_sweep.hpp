// SPDX-License-Identifier: Apache-2.0
#pragma once
// vitc sweep: PQV-Mobile's study on this library — pruning ratio × importance estimator ×
// precision — written as one CSV row per cell, with gnuplot plots of accuracy, latency and memory
// against the pruning ratio.
//
//   vitc sweep MODEL --out DIR [--ratios 0,0.09375,0.2,0.4,0.6]
//              [--importance magnitude,taylor,hessian-fisher] [--precisions fp32,fp16,int8,int4]
//              [--finetune-epochs 1] [--train-limit N] [--calib 256] [--eval-limit 0]
//              [--latency-runs 300] [--no-plots]
//
// Per (ratio, estimator): vitc prune's pruning of heads and MLP units (uniform ratio) and
// fine-tuning (DIR/models/r<ratio>_<estimator>.safetensors; ratio 0 is MODEL itself, shared by
// every estimator). Per precision: fp32 is that checkpoint; fp16 (fp16 storage), int8 (w8a8) and
// int4 (w4a8) are compressed checkpoints calibrated on `--calib` training images (PTQ). Each row:
// top-1 on the test split (the integer engine when it supports the configuration, else the
// fake-quant simulation: the `runs_on` column), batch-1 latency p50 and peak RSS measured in a
// new process (`vitc bench MODEL -j 1 --json`, so that the process holds nothing but the model),
// file bytes, parameters, MACs.
// Resumable: rows already in DIR/sweep.csv are skipped, and existing model files are reused.

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "cmd_bench.hpp"
#include "cmd_prune.hpp"
#include "cmd_quantize.hpp"
#include "common.hpp"
#include "progress.hpp"
#include "runner.hpp"
#include "vitcompress/engine/compressed_checkpoint.hpp"
#include "vitcompress/io/idx.hpp"
#include "vitcompress/model/vit_checkpoint.hpp"

namespace vitc::cli {

struct SweepOptions {
  std::string model, out = "sweep";
  std::vector<double> ratios{0, 0.09375, 0.2, 0.4, 0.6};
  std::vector<std::string> importances{"magnitude", "taylor", "hessian-fisher"};
  std::vector<std::string> precisions{"fp32", "fp16", "int8", "int4"};
  int finetune_epochs = 1;
  Index train_limit = 0, calib = 256, eval_limit = 0, latency_runs = 300;
  bool plots = true;
};

inline constexpr const char* kSweepHeader =
    "ratio,importance,precision,quant_config,runs_on,top1,test_images,latency_ms_p50,"
    "latency_ms_p90,model_bytes,peak_rss_bytes,parameters,macs_per_image,finetune_epochs";

// The quantization configuration of a sweep precision ("" for fp32).
inline std::string sweep_quant_config(const std::string& precision) {
  if (precision == "fp32") return "";
  if (precision == "fp16") return "fp16";
  if (precision == "int8") return "w8a8";
  if (precision == "int4") return "w4a8";
  VITC_THROW(ArgumentError("--precisions: unknown precision '" + precision +
                           "' (fp32, fp16, int8, int4)"));
}

inline std::string sweep_ratio_text(double r) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.5g", r);
  return buf;
}

inline std::string sweep_key(const std::string& ratio, const std::string& importance,
                             const std::string& precision) {
  return ratio + "," + importance + "," + precision;
}

// Rows of an existing CSV by key (ratio,importance,precision); a header other than ours is an
// error (not a sweep CSV of this version).
inline std::map<std::string, std::string> read_sweep_csv(const std::filesystem::path& path) {
  std::map<std::string, std::string> rows;
  std::ifstream in(path);
  if (!in) return rows;
  std::string line;
  if (!std::getline(in, line)) return rows;
  if (line != kSweepHeader)
    VITC_THROW(FormatError(path.string() + ": not a vitc sweep CSV (header differs)"));
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    std::vector<std::string> f;
    std::stringstream ss(line);
    for (std::string cell; std::getline(ss, cell, ',');) f.push_back(cell);
    if (f.size() != 14) VITC_THROW(FormatError(path.string() + ": malformed row '" + line + "'"));
    rows[sweep_key(f[0], f[1], f[2])] = line;
  }
  return rows;
}

// gnuplot data (one block per importance × precision, sorted by ratio) and script.
inline void write_sweep_plots(const std::filesystem::path& dir, const SweepOptions& o,
                              const std::map<std::string, std::string>& rows, double base_top1) {
  std::ofstream dat(dir / "sweep_plot.dat");
  dat << "# ratio(%) top1(%) latency_p50(ms) peak_rss(MiB) model_bytes(KiB); blocks: importance x "
         "precision\n";
  int block = 0;
  std::vector<std::string> titles;
  for (const auto& imp : o.importances)
    for (const auto& prec : o.precisions) {
      dat << "# " << imp << " " << prec << "\n";
      for (double r : o.ratios) {
        const auto it = rows.find(sweep_key(sweep_ratio_text(r), imp, prec));
        if (it == rows.end()) continue;
        std::vector<std::string> f;
        std::stringstream ss(it->second);
        for (std::string cell; std::getline(ss, cell, ',');) f.push_back(cell);
        dat << 100 * r << ' ' << 100 * std::stod(f[5]) << ' ' << f[7] << ' '
            << std::stod(f[10]) / (1 << 20) << ' ' << std::stod(f[9]) / 1024 << '\n';
      }
      dat << "\n\n";
      titles.push_back(imp + " " + prec);
      ++block;
    }
  std::ofstream gp(dir / "sweep.gp");
  gp << "# Plots of sweep.csv (vitc sweep): run in this folder with gnuplot sweep.gp\n"
        "set terminal pngcairo size 900,620 font \",10\"\n"
        "set grid\nset key outside right\nset xlabel \"pruning ratio (% of heads and MLP "
        "units)\"\n";
  const auto plot_lines = [&](int column, bool by_precision_only) {
    std::string cmd = "plot ";
    int b = 0;
    bool first = true;
    for (std::size_t i = 0; i < o.importances.size(); ++i)
      for (std::size_t p = 0; p < o.precisions.size(); ++p, ++b) {
        if (by_precision_only && i != 0) continue;
        if (!first) cmd += ", \\\n     ";
        first = false;
        cmd += "'sweep_plot.dat' index " + std::to_string(b) +
               " using 1:" + std::to_string(column) + " with linespoints lc " +
               std::to_string(p + 1) + " dt " + std::to_string(i + 1) + " pt " +
               std::to_string(5 + 2 * static_cast<int>(i)) + " title \"" +
               (by_precision_only ? o.precisions[p] : titles[b]) + "\"";
      }
    return cmd + "\n";
  };
  char base[64];
  std::snprintf(base, sizeof base, "%.2f", 100 * base_top1);
  gp << "set output 'sweep_accuracy.png'\nset title \"top-1 against pruning (unpruned fp32 " << base
     << "%)\"\nset ylabel \"top-1 (%)\"\n"
     << plot_lines(2, false);
  gp << "set output 'sweep_latency.png'\nset title \"batch-1 latency p50, one thread\"\n"
        "set ylabel \"ms per image\"\nset yrange [0:*]\n"
     << plot_lines(3, false);
  gp << "set output 'sweep_memory.png'\nset title \"peak RSS of the inference process\"\n"
        "set ylabel \"MiB\"\n"
     << plot_lines(4, false);
  gp << "set output 'sweep_bytes.png'\nset title \"model file bytes\"\nset ylabel \"KiB\"\n"
     << plot_lines(5, true);
  (void)block;
}

inline void run_sweep(const SweepOptions& o, const CommonOptions& common) {
  const bool bars = !common.json && !common.quiet;
  for (const auto& p : o.precisions) (void)sweep_quant_config(p);
  for (double r : o.ratios)
    if (!(r >= 0 && r < 1))
      VITC_THROW(ArgumentError("--ratios: " + std::to_string(r) + " outside [0, 1)"));
  for (const auto& imp : o.importances) (void)parse_estimator(imp);
  const std::filesystem::path dir = o.out;
  std::filesystem::create_directories(dir / "models");
  const auto csv_path = dir / "sweep.csv";
  auto rows = read_sweep_csv(csv_path);
  const bool new_file = !std::filesystem::exists(csv_path);
  std::ofstream csv(csv_path, std::ios::app);
  if (!csv) VITC_THROW(IoError("cannot write " + csv_path.string()));
  if (new_file) csv << kSweepHeader << '\n' << std::flush;

  const auto train_set = io::load_fashion_mnist(io::Split::kTrain);
  const auto test_set = io::load_fashion_mnist(io::Split::kTest);
  const auto train_data = labeled(train_set, o.train_limit);
  const auto test_data = labeled(test_set, o.eval_limit);
  const auto source = model::load_vit<float>(o.model);

  const Index total =
      static_cast<Index>(o.ratios.size() * o.importances.size() * o.precisions.size());
  Index done = 0, skipped = 0;
  const auto start = std::chrono::steady_clock::now();
  ProgressBar bar("sweep", bars);
  const auto tick = [&](const std::string& what) {
    ++done;
    const double el = seconds_since(start);
    const double per = done > skipped ? el / static_cast<double>(done - skipped) : 0;
    bar.update(static_cast<double>(done) / static_cast<double>(total),
               std::to_string(done) + "/" + std::to_string(total) + " " + what + " ETA " +
                   format_duration(per * static_cast<double>(total - done)));
  };
  for (double ratio : o.ratios) {
    const std::string rtext = sweep_ratio_text(ratio);
    for (const auto& imp : o.importances) {
      std::vector<std::string> missing;
      for (const auto& prec : o.precisions) {
        const auto key = sweep_key(rtext, imp, prec);
        if (rows.contains(key)) {
          ++skipped;
          tick(key + " (done before)");
          continue;
        }
        if (ratio == 0) {  // unpruned: one model whatever the estimator; reuse its row
          bool copied = false;
          for (const auto& other : o.importances) {
            const auto it = rows.find(sweep_key(rtext, other, prec));
            if (it == rows.end()) continue;
            const std::string tail = it->second.substr(key.size() - imp.size() + other.size());
            const std::string line = key + tail;
            csv << line << '\n' << std::flush;
            rows[key] = line;
            copied = true;
            ++skipped;
            tick(key + " (same as " + other + ")");
            break;
          }
          if (copied) continue;
        }
        missing.push_back(prec);
      }
      if (missing.empty()) continue;

      // The float (pruned, fine-tuned) model.
      std::filesystem::path fp32_path = o.model;
      if (ratio > 0) {
        fp32_path = dir / "models" / ("r" + rtext + "_" + imp + ".safetensors");
        if (!std::filesystem::exists(fp32_path)) {
          PruneCliOptions po;
          po.model = o.model;
          po.importance = imp;
          po.ratio = ratio;
          po.finetune_epochs = o.finetune_epochs;
          po.train_limit = o.train_limit;
          const PruneSetup setup = prune_setup(po);
          ThreadPool pool(common.threads);
          if (bars) bar.finish();
          PruneRun run = prune_and_finetune(po, setup, source, train_data, pool, bars);
          const auto tmp = fp32_path.string() + ".tmp";
          model::save_vit(tmp, run.weights,
                          {{"vitc.pruning", Json{{"source", o.model},
                                                 {"importance", imp},
                                                 {"ratio", ratio},
                                                 {"finetune_epochs", o.finetune_epochs},
                                                 {"train_images", train_data.size()}}
                                                .dump()}});
          std::filesystem::rename(tmp, fp32_path);
        }
      }
      const auto weights = model::load_vit<float>(fp32_path);
      for (const auto& prec : missing) {
        const std::string qname = sweep_quant_config(prec);
        std::filesystem::path path = fp32_path;
        if (!qname.empty()) {
          path = dir / "models" / ("r" + rtext + "_" + imp + "_" + prec + ".safetensors");
          if (!std::filesystem::exists(path)) {
            ThreadPool pool(common.threads);
            quant::FakeQuantViT fq(weights, quant::QuantConfig::named(qname), &pool);
            QuantizeOptions qo;
            qo.model = fp32_path.string();
            qo.calib = o.calib;
            (void)calibrate_and_train(fq, qo, train_set, common.threads, false);
            engine::CompressionInfo info;
            info.prune_ratio = ratio;
            info.importance = ratio > 0 ? imp : "none";
            if (ratio > 0) info.groups = {"heads", "mlp"};
            info.finetune_epochs = ratio > 0 ? o.finetune_epochs : 0;
            info.calibration_images = o.calib;
            info.quant_config = qname;
            info.source_parameters = source.config.parameter_count();
            info.source_macs = source.config.macs_per_image();
            info.source_file = o.model;
            const auto tmp = path.string() + ".tmp";
            engine::save_compressed(tmp, fq, info);
            std::filesystem::rename(tmp, path);
          }
        }
        double top1 = 0;
        std::string runs_on;
        {
          ThreadPool pool(common.threads);
          constexpr Index kEvalBatch = 256;
          ModelRunner runner(path.string(), kEvalBatch, &pool);
          top1 = model::evaluate_top1(runner, test_data, {}, kEvalBatch);
          runs_on = runner.runs_on();
        }
        const Json m = run_self({"bench", path.string(), "--json", "-q", "-j", "1", "--runs",
                                 std::to_string(o.latency_runs)})["models"][0];
        char line[512];
        std::snprintf(line, sizeof line, "%s,%s,%s,%s,%s,%.4f,%lld,%.4f,%.4f,%llu,%ld,%lld,%lld,%d",
                      rtext.c_str(), imp.c_str(), prec.c_str(), qname.empty() ? "-" : qname.c_str(),
                      runs_on.c_str(), top1, static_cast<long long>(test_data.size()),
                      m["latency_ms_per_image_p50"].get<double>(),
                      m["latency_ms_per_image_p90"].get<double>(),
                      m["model_bytes"].get<unsigned long long>(), m["peak_rss_bytes"].get<long>(),
                      static_cast<long long>(m["parameters"].get<Index>()),
                      static_cast<long long>(m["macs_per_image"].get<Index>()),
                      ratio > 0 ? o.finetune_epochs : 0);
        csv << line << '\n' << std::flush;
        const auto key = sweep_key(rtext, imp, prec);
        rows[key] = line;
        tick(key);
      }
    }
  }
  bar.finish();
  double base_top1 = 0;
  for (const auto& imp : o.importances)
    if (const auto it = rows.find(sweep_key("0", imp, "fp32")); it != rows.end()) {
      std::vector<std::string> f;
      std::stringstream ss(it->second);
      for (std::string cell; std::getline(ss, cell, ',');) f.push_back(cell);
      base_top1 = std::stod(f[5]);
    }
  write_sweep_plots(dir, o, rows, base_top1);
  int plot_status = -1;
  if (o.plots) {
    const std::string cmd = "cd '" + dir.string() + "' && gnuplot sweep.gp";
    plot_status = std::system(cmd.c_str());
  }
  Json out{{"csv", csv_path.string()},
           {"rows", rows.size()},
           {"computed", done - skipped},
           {"plots", o.plots && plot_status == 0},
           {"seconds", seconds_since(start)}};
  if (common.json) {
    print_json(out);
    return;
  }
  std::printf(
      "%s: %zu rows (%lld computed now)%s\n", csv_path.string().c_str(), rows.size(),
      static_cast<long long>(done - skipped),
      o.plots ? (plot_status == 0 ? "; plots sweep_*.png written" : "; gnuplot failed") : "");
}

template <class AddCommon>
void register_sweep(CLI::App& app, CommonOptions& common, AddCommon add_common) {
  auto o = std::make_shared<SweepOptions>();
  auto* sub = app.add_subcommand(
      "sweep", "Pruning ratio x importance x precision study: CSV and gnuplot plots (resumable)");
  add_common(sub);
  sub->add_option("model", o->model, "Float checkpoint (.safetensors)")
      ->required()
      ->check(CLI::ExistingFile);
  sub->add_option("--out", o->out, "Output folder (sweep.csv, plots, models/)")
      ->capture_default_str();
  sub->add_option("--ratios", o->ratios, "Pruning ratios")->delimiter(',')->capture_default_str();
  sub->add_option("--importance", o->importances, "Estimators")
      ->delimiter(',')
      ->capture_default_str();
  sub->add_option("--precisions", o->precisions, "fp32, fp16, int8 (w8a8), int4 (w4a8)")
      ->delimiter(',')
      ->capture_default_str();
  sub->add_option("--finetune-epochs", o->finetune_epochs, "Fine-tuning epochs per pruned model")
      ->check(CLI::Range(0, 1000))
      ->capture_default_str();
  sub->add_option("--train-limit", o->train_limit,
                  "Fine-tune (and score) on the first N training images (0: all)")
      ->check(CLI::Range(Index{0}, Index{60000}))
      ->capture_default_str();
  sub->add_option("--calib", o->calib, "Calibration images for fp16/int8/int4")
      ->check(CLI::Range(Index{1}, Index{60000}))
      ->capture_default_str();
  sub->add_option("--eval-limit", o->eval_limit, "Evaluate on the first N test images (0: all)")
      ->check(CLI::Range(Index{0}, Index{10000}))
      ->capture_default_str();
  sub->add_option("--latency-runs", o->latency_runs, "Batch-1 forwards timed per row")
      ->check(CLI::Range(Index{1}, Index{1000000}))
      ->capture_default_str();
  sub->add_flag("!--no-plots", o->plots, "Do not run gnuplot");
  sub->callback([o, &common] { run_sweep(*o, common); });
}

}  // namespace vitc::cli
