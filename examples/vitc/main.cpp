// SPDX-License-Identifier: Apache-2.0
// vitc: train, inspect, evaluate and run Vision Transformers with vitcompress.
// Every subcommand prints a table, or one JSON object with --json; bad input ends with one line on
// stderr naming the problem and a non-zero exit code (vitc::ErrorCode).

#include <cstdio>
#include <exception>

#include <CLI/CLI.hpp>

#include "cmd_bench.hpp"
#include "cmd_compress.hpp"
#include "cmd_eval.hpp"
#include "cmd_info.hpp"
#include "cmd_profile.hpp"
#include "cmd_prune.hpp"
#include "cmd_quantize.hpp"
#include "cmd_run.hpp"
#include "cmd_sweep.hpp"
#include "cmd_train.hpp"
#include "vitcompress/core/error.hpp"

int main(int argc, char** argv) {
  CLI::App app{"vitc: compress Vision Transformers for edge deployment"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "vitc 0.1.0");
  vitc::cli::CommonOptions common;
  auto add_common = [&](CLI::App* sub) {
    sub->add_flag("--json", common.json, "Print one JSON object instead of tables");
    sub->add_flag("-q,--quiet", common.quiet, "No progress bars");
    sub->add_option("-j,--threads", common.threads, "Threads (1 or more)")
        ->check(CLI::Range(1, 256))
        ->capture_default_str();
  };
  vitc::cli::register_train(app, common, add_common);
  vitc::cli::register_eval(app, common, add_common);
  vitc::cli::register_info(app, common, add_common);
  vitc::cli::register_run(app, common, add_common);
  vitc::cli::register_prune(app, common, add_common);
  vitc::cli::register_quantize(app, common, add_common);
  vitc::cli::register_profile(app, common, add_common);
  vitc::cli::register_compress(app, common, add_common);
  vitc::cli::register_bench(app, common, add_common);
  vitc::cli::register_sweep(app, common, add_common);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const vitc::Error& e) {
    std::fprintf(stderr, "vitc: error: %s\n", e.what());
    return static_cast<int>(e.code());
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "vitc: error: out of memory\n");
    return 6;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vitc: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
