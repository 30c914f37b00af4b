// SPDX-License-Identifier: Apache-2.0
#pragma once
// A progress bar on stderr: redrawn in place on a terminal, a plain line every 10% otherwise (CI
// logs), silent when disabled (--json, --quiet).

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>

namespace vitc::cli {

inline std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const long s = std::lround(seconds);
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%ldh%02ldm", s / 3600, (s / 60) % 60);
  else
    std::snprintf(buf, sizeof buf, "%ldm%02lds", s / 60, s % 60);
  return buf;
}

class ProgressBar {
 public:
  ProgressBar(std::string label, bool enabled)
      : label_(std::move(label)), enabled_(enabled), tty_(isatty(STDERR_FILENO) != 0) {}

  // fraction in [0, 1]; `detail` is shown after the bar (rates, loss, accuracy, ETA).
  void update(double fraction, const std::string& detail) {
    if (!enabled_) return;
    const auto now = std::chrono::steady_clock::now();
    if (tty_) {
      if (fraction < 1 && now - last_draw_ < std::chrono::milliseconds(100)) return;
      last_draw_ = now;
      constexpr int kWidth = 28;
      const int filled = static_cast<int>(std::lround(fraction * kWidth));
      std::string bar(static_cast<std::size_t>(filled), '#');
      bar.resize(kWidth, '.');
      std::fprintf(stderr, "\r%s [%s] %5.1f%% %s\033[K", label_.c_str(), bar.c_str(),
                   100 * fraction, detail.c_str());
      std::fflush(stderr);
    } else {
      const int decile = static_cast<int>(std::floor(fraction * 10 + 1e-9));
      if (decile <= last_decile_) return;
      last_decile_ = decile;
      std::fprintf(stderr, "%s %5.1f%% %s\n", label_.c_str(), 100 * fraction, detail.c_str());
    }
  }

  // Ends the bar's line on a terminal.
  void finish() {
    if (enabled_ && tty_) std::fputc('\n', stderr);
  }

 private:
  std::string label_;
  bool enabled_;
  bool tty_;
  int last_decile_ = -1;
  std::chrono::steady_clock::time_point last_draw_{};
};

}  // namespace vitc::cli
