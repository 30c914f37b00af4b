// SPDX-License-Identifier: Apache-2.0
#pragma once
// Parallel-for policies. A policy splits an index range [0, n) into contiguous chunks and runs
// `body(begin, end)` on each, returning when all are done:
//
//   Sequential   runs the whole range on the calling thread (the default everywhere);
//   ThreadPool   keeps `threads - 1` workers alive between calls and runs chunk 0 on the caller,
//                so a call costs a wake-up, not a thread creation, and allocates nothing.
//
// Chunks are a fixed, deterministic partition of the range (equal sizes, rounded to `grain`), so a
// computation gives the same result whatever thread ran which chunk. Bodies must not throw.
// A ThreadPool serves one parallel_for at a time; calling it from two threads at once, or from
// inside one of its own bodies, is a contract violation.

#include <algorithm>
#include <atomic>
#include <concepts>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

#include "vitcompress/core/error.hpp"

namespace vitc {

using ParallelIndex = std::int64_t;

template <class P>
concept ParallelPolicy = requires(P& p, void (*body)(ParallelIndex, ParallelIndex)) {
  { p.num_threads() } -> std::convertible_to<int>;
  p.parallel_for(ParallelIndex{}, ParallelIndex{}, body);
};

namespace detail {
// Chunk c of `chunks` equal pieces of [0, n), boundaries rounded up to multiples of `grain`.
inline void chunk_range(ParallelIndex n, ParallelIndex grain, int chunks, int c,
                        ParallelIndex& begin, ParallelIndex& end) noexcept {
  const ParallelIndex units = (n + grain - 1) / grain;
  const ParallelIndex per = units / chunks, extra = units % chunks;
  const ParallelIndex first = c * per + std::min<ParallelIndex>(c, extra);
  const ParallelIndex count = per + (c < extra ? 1 : 0);
  begin = std::min(n, first * grain);
  end = std::min(n, (first + count) * grain);
}
}  // namespace detail

class Sequential {
 public:
  [[nodiscard]] static constexpr int num_threads() noexcept { return 1; }
  template <class Body>
  void parallel_for(ParallelIndex n, ParallelIndex /*grain*/, Body&& body) const {
    if (n > 0) body(ParallelIndex{0}, n);
  }
};

class ThreadPool {
 public:
  // `threads` counts the caller too: ThreadPool(2) starts one worker. 0 means all hardware threads.
  explicit ThreadPool(int threads = 0) {
    if (threads < 0) VITC_THROW(ArgumentError("ThreadPool: threads must be >= 0"));
    if (threads == 0) threads = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
    threads_ = threads;
    workers_.reserve(static_cast<std::size_t>(threads - 1));
    for (int w = 1; w < threads; ++w) workers_.emplace_back([this, w] { worker_loop(w); });
  }
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;
  ~ThreadPool() {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    for (auto& t : workers_) t.join();
  }

  [[nodiscard]] int num_threads() const noexcept { return threads_; }

  // Runs body(begin, end) over at most num_threads() chunks; chunk boundaries are multiples of
  // grain.
  template <class Body>
  void parallel_for(ParallelIndex n, ParallelIndex grain, Body&& body) {
    if (n <= 0) return;
    grain = std::max<ParallelIndex>(grain, 1);
    const ParallelIndex units = (n + grain - 1) / grain;
    const int chunks = static_cast<int>(std::min<ParallelIndex>(units, threads_));
    if (chunks <= 1) {
      body(ParallelIndex{0}, n);
      return;
    }
    using B = std::remove_reference_t<Body>;
    Job job{[](void* ctx, ParallelIndex b, ParallelIndex e) { (*static_cast<B*>(ctx))(b, e); },
            const_cast<void*>(static_cast<const void*>(&body)), n, grain, chunks};
    {
      std::lock_guard lock(mutex_);
      job_ = job;
      pending_ = chunks - 1;
      ++generation_;
    }
    wake_.notify_all();
    run_chunk(job, 0);
    std::unique_lock lock(mutex_);
    done_.wait(lock, [this] { return pending_ == 0; });
  }

 private:
  struct Job {
    void (*call)(void*, ParallelIndex, ParallelIndex) = nullptr;
    void* ctx = nullptr;
    ParallelIndex n = 0, grain = 1;
    int chunks = 0;
  };

  static void run_chunk(const Job& job, int c) {
    ParallelIndex begin = 0, end = 0;
    detail::chunk_range(job.n, job.grain, job.chunks, c, begin, end);
    if (end > begin) job.call(job.ctx, begin, end);
  }

  void worker_loop(int id) {
    std::uint64_t seen = 0;
    for (;;) {
      Job job;
      {
        std::unique_lock lock(mutex_);
        wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
        job = job_;
      }
      if (id < job.chunks) {
        run_chunk(job, id);
        std::lock_guard lock(mutex_);
        if (--pending_ == 0) done_.notify_one();
      }
    }
  }

  int threads_ = 1;
  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  Job job_;
  int pending_ = 0;
  std::uint64_t generation_ = 0;
  bool stop_ = false;
};

}  // namespace vitc
