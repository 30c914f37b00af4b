// SPDX-License-Identifier: Apache-2.0
#pragma once
// vitc bench: latency per image (p50, p90), throughput, peak resident memory and file bytes of
// one or more models, side by side in one run (a float checkpoint and its compressed versions).
//
//   vitc bench MODEL... [--batch B] [--threads T] [--runs N] [--simulate] [--json]
//
// Each model is measured in its own child process (fork), so that its peak RSS is its own: the
// child loads the model (quantized ones into the integer engine when it supports them), runs 10
// warm-up batches and N timed batches of B synthetic images (fixed seed; the kernels' speed does
// not depend on the pixel values), and reports; with --accuracy N it then evaluates top-1 on the
// first N test images (after the peak RSS was read). Peak RSS is the child's whole process
// (executable, libraries, model, engine buffers, and what loading used), so compare models by
// difference. "RSS in use" is the resident memory after the timed batches, with the memory that
// loading freed (the fake-quant model the engine was built from, file buffers) returned to the
// system: what a process that only runs the model keeps.

#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "cmd_train.hpp"
#include "common.hpp"
#include "runner.hpp"
#include "vitcompress/core/parallel_for.hpp"
#include "vitcompress/io/idx.hpp"
#include "vitcompress/model/image_batches.hpp"

namespace vitc::cli {

// Reads everything the child `pid` writes to `fd` until it closes it, closes `fd`, and waits for
// the child; `status` receives its wait status.
inline std::string read_child_output(int fd, pid_t pid, int& status) {
  std::string text;
  char buf[4096];
  for (;;) {
    const ssize_t n = read(fd, buf, sizeof buf);
    if (n > 0) {
      text.append(buf, static_cast<std::size_t>(n));
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else {
      break;
    }
  }
  close(fd);
  status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return text;
}

// Runs `f` in a forked child and returns the JSON it produced. A vitc::Error in the child is
// rethrown here with its code and message.
inline Json run_in_child(const std::function<Json()>& f) {
  int fds[2];
  if (pipe(fds) != 0) VITC_THROW(IoError(std::string("pipe: ") + std::strerror(errno)));
  std::fflush(nullptr);
  const pid_t pid = fork();
  if (pid < 0) VITC_THROW(IoError(std::string("fork: ") + std::strerror(errno)));
  if (pid == 0) {
    close(fds[0]);
    Json out;
    int status = 0;
    try {
      out = Json{{"ok", f()}};
    } catch (const Error& e) {
      out = Json{{"error", e.what()}, {"code", static_cast<int>(e.code())}};
      status = 1;
    } catch (const std::exception& e) {
      out = Json{{"error", e.what()}, {"code", static_cast<int>(ErrorCode::kArgument)}};
      status = 1;
    }
    const std::string text = out.dump();
    std::size_t done = 0;
    while (done < text.size()) {
      const ssize_t n = write(fds[1], text.data() + done, text.size() - done);
      if (n <= 0) break;
      done += static_cast<std::size_t>(n);
    }
    close(fds[1]);
    _exit(status);
  }
  close(fds[1]);
  int status = 0;
  const std::string text = read_child_output(fds[0], pid, status);
  const Json out = Json::parse(text, nullptr, false);
  if (out.is_discarded() || !out.is_object())
    VITC_THROW(IoError("measurement process ended without a result (status " +
                       std::to_string(status) + ")"));
  if (out.contains("error")) {
    const int code = out.value("code", static_cast<int>(ErrorCode::kArgument));
    const auto ec = code >= 2 && code <= 5 ? static_cast<ErrorCode>(code) : ErrorCode::kArgument;
    VITC_THROW(Error(ec, out["error"].get<std::string>()));
  }
  return out["ok"];
}

// Runs this executable (/proc/self/exe) with `args` in a new process and returns what it printed
// on stdout, parsed as JSON: a fresh process, so that its peak RSS owes nothing to the caller's
// memory (a forked child's peak RSS starts at its parent's). Its stderr is the caller's.
inline Json run_self(const std::vector<std::string>& args) {
  int fds[2];
  if (pipe(fds) != 0) VITC_THROW(IoError(std::string("pipe: ") + std::strerror(errno)));
  std::vector<char*> argv;
  static char self_name[] = "vitc";
  argv.push_back(self_name);
  std::vector<std::string> copy = args;
  for (auto& a : copy) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::fflush(nullptr);
  const pid_t pid = fork();
  if (pid < 0) VITC_THROW(IoError(std::string("fork: ") + std::strerror(errno)));
  if (pid == 0) {
    close(fds[0]);
    dup2(fds[1], STDOUT_FILENO);
    close(fds[1]);
    execv("/proc/self/exe", argv.data());
    _exit(127);
  }
  close(fds[1]);
  int status = 0;
  const std::string text = read_child_output(fds[0], pid, status);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    VITC_THROW(IoError("vitc " + (args.empty() ? std::string() : args[0]) +
                       " in a new process failed (status " + std::to_string(status) + ")"));
  const Json out = Json::parse(text, nullptr, false);
  if (out.is_discarded()) VITC_THROW(IoError("vitc " + args[0] + " printed no JSON"));
  return out;
}

// Resident set size of this process now, in bytes.
inline long current_rss_bytes() {
  long pages_total = 0, pages_resident = 0;
  if (FILE* f = std::fopen("/proc/self/statm", "r")) {
    if (std::fscanf(f, "%ld %ld", &pages_total, &pages_resident) != 2) pages_resident = 0;
    std::fclose(f);
  }
  return pages_resident * sysconf(_SC_PAGESIZE);
}

struct BenchOptions {
  std::vector<std::string> models;
  Index batch = 1;
  Index runs = 200;
  bool simulate = false;
  Index accuracy_images = 0;  // also top-1 on the first N test images (0: no)
};

// Measures one model (call it in a child: see run_in_child).
inline Json measure_model(const std::string& path, Index batch, Index runs, int threads,
                          bool simulate, Index accuracy_images = 0) {
  const long rss_start = current_rss_bytes();
  ThreadPool pool(threads);
  ModelRunner runner(path, batch, &pool, simulate);
  runner.release_simulation();
  return_freed_memory();
  const auto& c = runner.config();
  Tensor<std::uint8_t, 3> pixels({batch, c.image_size, c.image_size});
  std::mt19937 rng(1234);
  for (auto& v : pixels.span()) v = static_cast<std::uint8_t>(rng());
  Tensor<float, 4> images({batch, c.in_channels, c.image_size, c.image_size});
  if (c.in_channels == 1) {
    std::vector<Index> idx(static_cast<std::size_t>(batch));
    for (Index i = 0; i < batch; ++i) idx[static_cast<std::size_t>(i)] = i;
    model::make_image_batch(pixels.cview(), idx, {}, {}, nullptr, images.view());
  } else {
    std::uniform_real_distribution<float> u(-1.f, 1.f);
    for (auto& v : images.span()) v = u(rng);
  }
  Tensor<float, 2> logits({batch, c.num_classes});
  std::vector<double> per_image_ms;
  double total = 0;
  for (Index r = 0; r < runs + 10; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    runner.predict(images.cview(), logits.view());
    const double s = seconds_since(t0);
    if (r >= 10) {
      per_image_ms.push_back(1e3 * s / static_cast<double>(batch));
      total += s;
    }
  }
  const long rss_steady = current_rss_bytes();  // loaded, run, loading's scratch freed
  std::sort(per_image_ms.begin(), per_image_ms.end());
  const auto n = per_image_ms.size();
  Json out{{"model", path},
           {"precision", runner.precision()},
           {"runs_on", runner.runs_on()},
           {"parameters", c.parameter_count()},
           {"macs_per_image", c.macs_per_image()},
           {"model_bytes", file_bytes(path)},
           {"batch", batch},
           {"threads", threads},
           {"runs", runs},
           {"latency_ms_per_image_p50", n ? per_image_ms[n / 2] : 0.0},
           {"latency_ms_per_image_p90", n ? per_image_ms[std::min(n - 1, n * 9 / 10)] : 0.0},
           {"images_per_second", total > 0 ? static_cast<double>(batch * runs) / total : 0.0},
           {"peak_rss_bytes", peak_rss_bytes()},
           {"rss_before_load_bytes", rss_start},
           {"rss_after_runs_bytes", rss_steady}};
  if (!runner.engine_note().empty()) out["engine_note"] = runner.engine_note();
  if (accuracy_images > 0) {  // after the peak RSS was read: the test images are not counted
    const auto test_set = io::load_fashion_mnist(io::Split::kTest);
    const auto test_data = labeled(test_set, accuracy_images);
    out["top1"] = model::evaluate_top1(runner, test_data, {}, batch);
    out["test_images"] = test_data.size();
  }
  return out;
}

inline void run_bench(const BenchOptions& o, const CommonOptions& common) {
  Json rows = Json::array();
  for (const auto& m : o.models) {
    if (!common.json && !common.quiet) std::fprintf(stderr, "bench %s ...\n", m.c_str());
    rows.push_back(run_in_child([&] {
      return measure_model(m, o.batch, o.runs, common.threads, o.simulate, o.accuracy_images);
    }));
  }
  if (common.json) {
    print_json(
        Json{{"batch", o.batch}, {"threads", common.threads}, {"runs", o.runs}, {"models", rows}});
    return;
  }
  std::printf("batch %lld, %d threads, %lld timed batches per model (synthetic images)\n",
              static_cast<long long>(o.batch), common.threads, static_cast<long long>(o.runs));
  std::printf("%-36s %-10s %-22s %10s %10s %10s %12s %12s %12s %8s\n", "model", "precision",
              "runs on", "p50 ms/img", "p90 ms/img", "images/s", "peak RSS", "RSS in use",
              "file bytes", "top-1");
  for (const auto& r : rows) {
    std::string name = r["model"].get<std::string>();
    if (name.size() > 36) name = "..." + name.substr(name.size() - 33);
    char top1[16] = "-";
    if (r.contains("top1"))
      std::snprintf(top1, sizeof top1, "%.2f%%", 100 * r["top1"].get<double>());
    std::printf("%-36s %-10s %-22s %10.4f %10.4f %10.0f %12s %12s %12llu %8s\n", name.c_str(),
                r["precision"].get<std::string>().c_str(), r["runs_on"].get<std::string>().c_str(),
                r["latency_ms_per_image_p50"].get<double>(),
                r["latency_ms_per_image_p90"].get<double>(), r["images_per_second"].get<double>(),
                human_bytes(r["peak_rss_bytes"].get<double>()).c_str(),
                human_bytes(r["rss_after_runs_bytes"].get<double>()).c_str(),
                r["model_bytes"].get<unsigned long long>(), top1);
  }
  if (o.accuracy_images > 0)
    std::printf("top-1 on the first %lld test images\n", static_cast<long long>(o.accuracy_images));
  for (const auto& r : rows)
    if (r.contains("engine_note"))
      std::printf("note: %s not run by the integer engine: %s\n",
                  r["model"].get<std::string>().c_str(),
                  r["engine_note"].get<std::string>().c_str());
}

template <class AddCommon>
void register_bench(CLI::App& app, CommonOptions& common, AddCommon add_common) {
  auto o = std::make_shared<BenchOptions>();
  auto* sub = app.add_subcommand(
      "bench", "Latency, throughput, peak memory and bytes of models, side by side");
  add_common(sub);
  sub->add_option("models", o->models, "Checkpoints (float, quantized or compressed)")
      ->required()
      ->check(CLI::ExistingFile);
  sub->add_option("--batch", o->batch, "Images per forward")
      ->check(CLI::Range(Index{1}, Index{4096}))
      ->capture_default_str();
  sub->add_option("--runs", o->runs, "Timed forwards per model (after 10 warm-up runs)")
      ->check(CLI::Range(Index{1}, Index{1000000}))
      ->capture_default_str();
  sub->add_flag("--simulate", o->simulate,
                "Quantized models: time the fake-quant simulation instead of the integer engine");
  sub->add_option("--accuracy", o->accuracy_images,
                  "Also top-1 on the first N test images (0: none; 10000: all)")
      ->check(CLI::Range(Index{0}, Index{10000}))
      ->capture_default_str();
  sub->callback([o, &common] { run_bench(*o, common); });
}

}  // namespace vitc::cli
