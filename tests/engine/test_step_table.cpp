// SPDX-License-Identifier: Apache-2.0
// detail::StepTable and detail::BucketTable, the two forms of the engine's 2^16-entry int8 GELU
// table: each equals the table everywhere, on its scalar definition and on its AVX-512 path (the
// step search; the bucket lookup where the CPU has VBMI), for GELU tables at several output ranges
// and for adversarial tables (steps of several codes, steps at both ends, more steps than the form
// holds).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <utility>
#include <vector>

#include "vitcompress/core/cpu_features.hpp"
#include "vitcompress/engine/detail/bucket_table.hpp"
#include "vitcompress/engine/detail/gelu_table.hpp"
#include "vitcompress/engine/detail/step_table.hpp"
#include "vitcompress/kernels/arch.hpp"

namespace step_table_test {

using vitc::Index;
namespace ed = vitc::engine::detail;

// The engine's GELU table for an fc2 input range [−0.17, hi] (engine/detail/gelu_table.hpp).
std::vector<std::int8_t> gelu_table(double hi) {
  const double lo = -0.17, so = (hi - lo) / 255;
  const auto zp = static_cast<std::int32_t>(std::lround(-lo / so));
  std::vector<std::int8_t> t = ed::make_gelu_table(so, zp).codes;
  t.resize(65536);
  return t;
}

#if VITC_HAVE_X86_TARGET_KERNELS
// Every int16 value through the AVX-512 search, in an odd-length buffer (masked tail).
bool avx512_equals_table(const ed::StepTable& st, const std::vector<std::int8_t>& table) {
  std::vector<std::int16_t> in(65536 + 7);
  for (std::size_t i = 0; i < in.size(); ++i)
    in[i] = static_cast<std::int16_t>(static_cast<int>(i % 65536) - 32768);
  std::vector<std::int8_t> out(in.size());
  ed::step_lookup_avx512(st, in.data(), out.data(), static_cast<Index>(in.size()));
  for (std::size_t i = 0; i < in.size(); ++i)
    if (out[i] != table[static_cast<std::size_t>(in[i] + 32768)]) return false;
  return true;
}
#endif

void check_table(const std::vector<std::int8_t>& table, bool expect_usable) {
  const ed::StepTable st = ed::build_step_table(table.data() + 32768);
  CHECK(st.usable == expect_usable);
  if (!st.usable) return;
  for (int x = -32768; x < 32768; ++x)
    if (st.at(static_cast<std::int16_t>(x)) != table[static_cast<std::size_t>(x + 32768)]) {
      FAIL_CHECK("step form differs at x = " << x);
      break;
    }
#if VITC_HAVE_X86_TARGET_KERNELS
  if (vitc::kernels::arch::Avx512Vnni::available()) CHECK(avx512_equals_table(st, table));
#endif
}

// The bucket form: usable as expected, and where usable equal to the table for every int16, on
// the definition and (with VBMI) on the AVX-512 lookup at three offsets of an odd-length buffer.
void check_buckets(const std::vector<std::int8_t>& table, bool expect_usable) {
  const ed::BucketTable bt = ed::build_bucket_table(table.data() + 32768);
  CHECK(bt.usable == expect_usable);
  if (!bt.usable) return;
  for (int x = -32768; x < 32768; ++x)
    if (bt.at(static_cast<std::int16_t>(x)) != table[static_cast<std::size_t>(x + 32768)]) {
      FAIL_CHECK("bucket form differs at x = " << x);
      break;
    }
#if VITC_HAVE_X86_TARGET_KERNELS
  if (!vitc::kernels::arch::Avx512Vnni::available() || !vitc::cpu_features().avx512vbmi) return;
  std::vector<std::int16_t> in(65536 + 77);
  for (std::size_t i = 0; i < in.size(); ++i)
    in[i] = static_cast<std::int16_t>(static_cast<int>((i * 7919) % 65536) - 32768);
  for (std::size_t from : {0, 1, 33}) {
    std::vector<std::int8_t> out(in.size() + 64, 99);
    const auto n = static_cast<Index>(in.size() - from);
    ed::bucket_lookup_avx512vbmi(bt, in.data() + from, out.data(), n);
    bool same = true;
    for (std::size_t i = 0; i < static_cast<std::size_t>(n); ++i)
      same = same && out[i] == table[static_cast<std::size_t>(in[i + from] + 32768)];
    CHECK(same);
    CHECK(std::all_of(out.begin() + n, out.end(), [](std::int8_t v) { return v == 99; }));
  }
#endif
}

// A table rising at index 1000 and 60000 (buckets of 256 from 1000), with `ups` rises at 30001,
// 30011, ... and `downs` falls at 30100, 30110, ...: all in bucket 113, [29928, 30184).
std::vector<std::int8_t> steps_in_one_bucket(int ups, int downs) {
  std::vector<std::int8_t> t(65536, 0);
  int level = 0;
  auto step_at = [&](int x, int by) {
    level += by;
    for (int i = x; i < 65536; ++i)
      t[static_cast<std::size_t>(i)] = static_cast<std::int8_t>(level);
  };
  step_at(1000, 1);
  for (int j = 0; j < ups; ++j) step_at(30001 + 10 * j, 1);
  for (int j = 0; j < downs; ++j) step_at(30100 + 10 * j, -1);
  step_at(60000, 1);
  return t;
}

}  // namespace step_table_test

TEST_SUITE("engine") {
  using namespace step_table_test;

  TEST_CASE("StepTable: GELU tables of several output ranges equal their step form") {
    for (double hi : {0.3, 1.0, 4.0, 12.0, 60.0}) {
      CAPTURE(hi);
      check_table(gelu_table(hi), true);
    }
  }

  TEST_CASE("StepTable: adversarial tables, and a table with too many steps is not usable") {
    std::vector<std::int8_t> t(65536, 0);
    // Steps at both ends and jumps of 100 codes (255 codes of rises in all, the capacity), a fall
    // of 100, a constant table.
    t[0] = -128;
    for (std::size_t i = 1; i < t.size(); ++i) t[i] = i < 40000 ? -28 : (i < 50000 ? 72 : -28);
    t[65535] = 27;
    check_table(t, true);
    check_table(std::vector<std::int8_t>(65536, 5), true);
    // 255 rises then 255 falls: exactly the capacity.
    std::vector<std::int8_t> zig(65536);
    for (std::size_t i = 0; i < zig.size(); ++i) {
      const int k = static_cast<int>(i / 100);
      zig[i] = static_cast<std::int8_t>((k < 255 ? k : std::max(0, 510 - k)) - 128);
    }
    check_table(zig, true);
    // Trees of every depth 0..8 (n keys: depth bit_width(n)): n rises of one code, then n falls
    // of one code, at irregular places.
    for (int n : {1, 2, 3, 4, 7, 8, 16, 31, 32, 64, 100, 128, 200, 255}) {
      CAPTURE(n);
      std::vector<std::int8_t> steps(65536);
      for (std::size_t i = 0; i < steps.size(); ++i) {
        const int k = static_cast<int>(i / 127);  // 0 .. 516
        const int level = k < n ? k : std::max(0, 2 * n - k);
        steps[i] = static_cast<std::int8_t>(level - 128);
      }
      check_table(steps, true);
    }
    // Random codes: thousands of steps.
    std::mt19937 rng(7);
    std::vector<std::int8_t> noise(65536);
    for (auto& v : noise) v = static_cast<std::int8_t>(static_cast<int>(rng() % 256) - 128);
    check_table(noise, false);
  }

  TEST_CASE(
      "BucketTable: GELU tables equal their bucket form, and too many steps per bucket fall "
      "back") {
    for (double hi : {0.9, 1.0, 2.0, 3.0, 5.0, 8.0, 12.0, 30.0, 100.0}) {
      CAPTURE(hi);
      check_buckets(gelu_table(hi), true);
    }
    // The 16-bit scale spans only where GELU's code changes: 2 rises and 1 fall per bucket at
    // most for an output range of 8, 3 rises at 2.
    const ed::BucketTable wide = ed::build_bucket_table(gelu_table(8.0).data() + 32768);
    CHECK(wide.ups <= 2);
    CHECK(wide.downs <= 1);
    CHECK(ed::build_bucket_table(gelu_table(2.0).data() + 32768).ups <= 3);
    // An output range this narrow puts a dozen rises into one bucket: the engine keeps the step
    // search.
    check_buckets(gelu_table(0.1), false);
  }

  TEST_CASE("BucketTable: adversarial tables") {
    check_buckets(std::vector<std::int8_t>(65536, -7), true);  // constant
    // One rise of 255 at x = 1: buckets of one value (s = 0), the rise at a bucket's start.
    std::vector<std::int8_t> cliff(65536, -128);
    std::fill(cliff.begin() + 32769, cliff.end(), std::int8_t{127});
    check_buckets(cliff, true);
    // Steps at both ends of the int16 range (buckets of 256), and the end of the last bucket
    // beyond x = 32767.
    std::vector<std::int8_t> ends(65536, 0);
    ends[0] = -1;
    ends[65535] = 3;
    check_buckets(ends, true);
    // Bucket 113 ([29928, 30184)) with as many rises and falls as each lookup reads.
    for (auto [ups, downs] : {std::pair{1, 0}, {2, 1}, {3, 1}, {4, 1}, {5, 1}, {4, 2}, {6, 2}}) {
      CAPTURE(ups);
      CAPTURE(downs);
      const std::vector<std::int8_t> t = steps_in_one_bucket(ups, downs);
      const ed::BucketTable bt = ed::build_bucket_table(t.data() + 32768);
      CHECK(bt.ups == ups);
      CHECK(bt.downs == downs);
      check_buckets(t, true);
    }
    // Exactly kUps rises and kDowns falls, then with a rise more.
    for (int extra : {0, 1}) {
      CAPTURE(extra);
      check_buckets(steps_in_one_bucket(ed::BucketTable::kUps + extra, ed::BucketTable::kDowns),
                    extra == 0);
    }
    // Random codes: thousands of steps.
    std::mt19937 rng(9);
    std::vector<std::int8_t> noise(65536);
    for (auto& v : noise) v = static_cast<std::int8_t>(static_cast<int>(rng() % 256) - 128);
    check_buckets(noise, false);
  }
}
