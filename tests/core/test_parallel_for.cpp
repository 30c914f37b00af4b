// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "vitcompress/core/parallel_for.hpp"

TEST_SUITE("core") {
  TEST_CASE("policies satisfy the concept") {
    static_assert(vitc::ParallelPolicy<vitc::Sequential>);
    static_assert(vitc::ParallelPolicy<vitc::ThreadPool>);
  }

  TEST_CASE("every index is visited exactly once, in grain-aligned chunks") {
    for (int threads : {1, 2, 3, 7}) {
      vitc::ThreadPool pool(threads);
      CHECK(pool.num_threads() == threads);
      for (vitc::ParallelIndex n : {0, 1, 5, 64, 1000, 1001}) {
        for (vitc::ParallelIndex grain : {1, 4, 16}) {
          CAPTURE(threads);
          CAPTURE(n);
          CAPTURE(grain);
          std::vector<std::atomic<int>> hits(static_cast<std::size_t>(n));
          std::atomic<int> calls{0};
          bool aligned = true;
          pool.parallel_for(n, grain, [&](vitc::ParallelIndex b, vitc::ParallelIndex e) {
            if (b % grain != 0) aligned = false;
            ++calls;
            for (auto i = b; i < e; ++i) ++hits[static_cast<std::size_t>(i)];
          });
          for (auto& h : hits) CHECK(h.load() == 1);
          CHECK(aligned);
          CHECK(calls.load() <= threads);
        }
      }
    }
  }

  TEST_CASE("a pool is reusable many times in a row") {
    vitc::ThreadPool pool(2);
    long total = 0;
    for (int rep = 0; rep < 2000; ++rep) {
      std::atomic<long> sum{0};
      pool.parallel_for(100, 1, [&](auto b, auto e) {
        for (auto i = b; i < e; ++i) sum += i;
      });
      total += sum;
    }
    CHECK(total == 2000L * 4950);
  }

  TEST_CASE("spinning and sleeping pools: back to back, fewer chunks than threads, slow bodies") {
    // Exercises both hand-offs: the spin window (short bodies, calls back to back) and the
    // sleep after it (bodies slower than the window, pauses between calls).
    for (int spin : {0, 1, vitc::ThreadPool::kDefaultSpin}) {
      for (int threads : {2, 4}) {
        CAPTURE(spin);
        CAPTURE(threads);
        vitc::ThreadPool pool(threads, spin);
        long expected = 0, total = 0;
        for (int rep = 0; rep < 600; ++rep) {
          const vitc::ParallelIndex n = 1 + rep % 7;
          const bool slow = rep % 50 == 0;
          std::atomic<long> sum{0};
          pool.parallel_for(n, 1, [&](auto b, auto e) {
            if (slow) std::this_thread::sleep_for(std::chrono::microseconds(300));
            for (auto i = b; i < e; ++i) sum += i + 1;
          });
          if (rep % 97 == 0) std::this_thread::sleep_for(std::chrono::microseconds(500));
          total += sum;
          expected += n * (n + 1) / 2;
        }
        CHECK(total == expected);
      }
    }
    CHECK_THROWS_AS(vitc::ThreadPool(2, -1), vitc::ArgumentError);
  }

  TEST_CASE("Sequential runs the whole range once") {
    int calls = 0;
    vitc::Sequential{}.parallel_for(10, 3, [&](auto b, auto e) {
      ++calls;
      CHECK(b == 0);
      CHECK(e == 10);
    });
    CHECK(calls == 1);
    CHECK_THROWS_AS(vitc::ThreadPool(-1), vitc::ArgumentError);
  }
}
