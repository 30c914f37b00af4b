// SPDX-License-Identifier: Apache-2.0
#pragma once
// Parallel-for policies. A policy splits an index range [0, n) into contiguous chunks and runs
// `body(begin, end)` on each, returning when all are done:
//
//   Sequential   runs the whole range on the calling thread (the default everywhere);
//   ThreadPool   keeps `threads - 1` workers alive between calls and runs chunk 0 on the caller,
//                so a call costs a wake-up, not a thread creation, and allocates nothing. Workers
//                and the caller spin briefly before sleeping: a ViT forward issues hundreds of
//                short parallel_for calls back to back, and a futex wake per call cost more than
//                the second thread gained (DeiT-tiny ran slower on 2 threads than on 1).
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

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#include <immintrin.h>
#endif

#include "vitcompress/core/error.hpp"

namespace vitc {

using ParallelIndex = std::int64_t;

template <class P>
concept ParallelPolicy = requires(P& p, void (*body)(ParallelIndex, ParallelIndex)) {
  { p.num_threads() } -> std::convertible_to<int>;
  p.parallel_for(ParallelIndex{}, ParallelIndex{}, body);
};

namespace detail {
// Tells the core that this is a spin-wait (frees pipeline resources for the sibling hyperthread).
inline void spin_pause() noexcept {
#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
  _mm_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

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
  // `spin`: how many pause iterations a waiting thread polls before it sleeps (tens of
  // microseconds at the default); 0 sleeps at once, which suits a pool shared with busy processes.
  explicit ThreadPool(int threads = 0, int spin = kDefaultSpin) {
    if (threads < 0) VITC_THROW(ArgumentError("ThreadPool: threads must be >= 0"));
    if (spin < 0) VITC_THROW(ArgumentError("ThreadPool: spin must be >= 0"));
    if (threads == 0) threads = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
    threads_ = threads;
    spin_ = spin;
    workers_.reserve(static_cast<std::size_t>(threads - 1));
    for (int w = 1; w < threads; ++w) workers_.emplace_back([this, w] { worker_loop(w); });
  }
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;
  ~ThreadPool() {
    {
      std::lock_guard lock(mutex_);
      stop_.store(true, std::memory_order_release);
    }
    wake_.notify_all();
    for (auto& t : workers_) t.join();
  }

  static constexpr int kDefaultSpin = 4096;

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
    const Job job{
        [](void* ctx, ParallelIndex b, ParallelIndex e) { (*static_cast<B*>(ctx))(b, e); },
        const_cast<void*>(static_cast<const void*>(&body)), n, grain, chunks};
    // Every worker acknowledges every job (even with no chunk of its own) before this call
    // returns, so no worker is reading job_ now. The generation bump publishes job_ and
    // pending_; only sleeping workers need the mutex and a notification. The seq_cst pair
    // (generation_ here, sleepers_ in worker_loop) means that either the worker sees the new
    // generation before it sleeps or this thread sees it asleep and wakes it.
    job_ = job;
    pending_.store(threads_ - 1, std::memory_order_relaxed);
    generation_.fetch_add(1, std::memory_order_seq_cst);
    if (sleepers_.load(std::memory_order_seq_cst) > 0) {
      std::lock_guard lock(mutex_);
      wake_.notify_all();
    }
    run_chunk(job, 0);
    for (int i = 0; i < spin_; ++i) {
      if (pending_.load(std::memory_order_acquire) == 0) return;
      detail::spin_pause();
    }
    std::unique_lock lock(mutex_);
    caller_waiting_.store(true, std::memory_order_seq_cst);
    done_.wait(lock, [this] { return pending_.load(std::memory_order_seq_cst) == 0; });
    caller_waiting_.store(false, std::memory_order_relaxed);
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
      bool started = false;
      for (int i = 0; i < spin_ && !started; ++i) {
        started = generation_.load(std::memory_order_acquire) != seen ||
                  stop_.load(std::memory_order_acquire);
        if (!started) detail::spin_pause();
      }
      if (!started) {
        std::unique_lock lock(mutex_);
        sleepers_.fetch_add(1, std::memory_order_seq_cst);
        wake_.wait(lock, [&] {
          return stop_.load(std::memory_order_relaxed) ||
                 generation_.load(std::memory_order_seq_cst) != seen;
        });
        sleepers_.fetch_sub(1, std::memory_order_relaxed);
      }
      if (stop_.load(std::memory_order_acquire)) return;
      seen = generation_.load(std::memory_order_acquire);
      const Job job = job_;  // published by the generation bump; stable until we acknowledge
      if (id < job.chunks) run_chunk(job, id);
      if (pending_.fetch_sub(1, std::memory_order_seq_cst) == 1 &&
          caller_waiting_.load(std::memory_order_seq_cst)) {
        // Under the mutex: the caller sets caller_waiting_ and sleeps under it.
        std::lock_guard lock(mutex_);
        done_.notify_one();
      }
    }
  }

  int threads_ = 1;
  int spin_ = kDefaultSpin;
  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  Job job_;
  std::atomic<int> pending_{0};
  std::atomic<std::uint64_t> generation_{0};
  std::atomic<bool> stop_{false};
  std::atomic<int> sleepers_{0};             // workers waiting on wake_
  std::atomic<bool> caller_waiting_{false};  // the caller waits on done_
};

}  // namespace vitc
