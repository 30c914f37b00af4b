// SPDX-License-Identifier: Apache-2.0
#pragma once
// A lookup table over every int16 code, held by buckets of its steps: the engine's GELU table read
// with byte permutes (AVX-512 VBMI), about twice as fast as the step search of
// detail/step_table.hpp.
//
// Why: the step search walks an 8-level tree per value, about 45 vector operations per 32 values,
// and was 7% of DeiT-tiny's integer forward. But the table changes only at a few hundred x, spread
// over its active range [x0, x_last]. Cut that range into 256 buckets of 2^s consecutive x (s in
// [0, 8], the smallest that covers it) and let o be the offset of x in its bucket b. Then
//
//   table[x] = first[b] + #{j : o > up_j[b]} − #{j : o > down_j[b]}     for x >= x0,
//   table[x] = table[x0 − 1]                                              for x < x0,
//
// where first[b] is the table at the bucket's start and up_j / down_j list the offsets (minus 1)
// of the rises / falls inside the bucket, repeated by the size of the step; unused entries hold
// 255, which no offset exceeds. Each of these is a 256-byte table over the buckets, and 64 values
// read one with two vpermi2b and a blend: 64 values cost about 40 operations with up to 2 rises
// and 1 fall per bucket, about 50 with up to 4 rises and 2 falls, about 70 with up to 8. x beyond
// the last bucket reads its last offset, where the table is already constant. build_bucket_table()
// checks the form against every table entry; a table with more steps in one bucket than the form
// holds is not usable and the caller keeps the step search.

#include <algorithm>
#include <array>
#include <cstdint>

#include "vitcompress/core/tensor.hpp"
#include "vitcompress/kernels/arch.hpp"

#if VITC_HAVE_X86_TARGET_KERNELS
#include <immintrin.h>
#endif

namespace vitc::engine::detail {

struct BucketTable {
  static constexpr int kUps = 8, kDowns = 2;  // per bucket, at most
  static constexpr int kTables = 1 + kUps + kDowns;

  std::int16_t x0 = -32768;  // the first x whose code differs from its predecessor's
  int shift = 8;             // s: buckets of 2^s values
  std::int8_t below = 0;     // table[x] for x < x0
  // byte[0][b] = first[b] (int8 bits), byte[1 + j][b] = up_j[b], byte[1 + kUps + j][b] =
  // down_j[b].
  alignas(64) std::array<std::array<std::uint8_t, 256>, kTables> byte{};
  int ups = 0;    // the most rises in one bucket: the lookup reads only that many up tables
  int downs = 0;  // and the most falls
  bool usable = false;

  // table[x] for any int16 x (the definition the SIMD path equals).
  [[nodiscard]] std::int8_t at(std::int16_t x) const noexcept {
    if (x < x0) return below;
    const unsigned d = std::min(static_cast<unsigned>(x - x0), (256u << shift) - 1);
    const unsigned b = d >> shift, o = d & ((1u << shift) - 1);
    int code = static_cast<std::int8_t>(byte[0][b]);
    for (int j = 0; j < kUps; ++j) code += o > byte[static_cast<std::size_t>(1 + j)][b] ? 1 : 0;
    for (int j = 0; j < kDowns; ++j)
      code -= o > byte[static_cast<std::size_t>(1 + kUps + j)][b] ? 1 : 0;
    return static_cast<std::int8_t>(code);
  }
};

// The bucket form of table[x] (x in [−32768, 32767], `table` pointing at x = 0); usable only if
// every bucket has at most kUps rises and kDowns falls and the form equals the table everywhere.
[[nodiscard]] inline BucketTable build_bucket_table(const std::int8_t* table) {
  BucketTable t;
  auto at = [&](int x) { return int{table[std::clamp(x, -32768, 32767)]}; };
  int first = 32768, last = -32769;
  for (int x = -32767; x < 32768; ++x)
    if (table[x] != table[x - 1]) {
      first = std::min(first, x);
      last = x;
    }
  if (first > 32767) {  // constant
    first = -32768;
    last = -32768;
  }
  t.x0 = static_cast<std::int16_t>(first);
  t.below = static_cast<std::int8_t>(at(first - 1));
  t.shift = 0;
  while (last - first >= (256 << t.shift)) ++t.shift;  // last − first < 2^16: t.shift <= 8
  for (auto& row : t.byte) row.fill(255);
  const int width = 1 << t.shift;
  for (int b = 0; b < 256; ++b) {
    const int start = first + b * width;
    t.byte[0][static_cast<std::size_t>(b)] = static_cast<std::uint8_t>(at(start));
    int ups = 0, downs = 0;
    for (int p = 1; p < width; ++p) {
      const int step = at(start + p) - at(start + p - 1);
      for (int k = 0; k < step; ++k, ++ups) {
        if (ups == BucketTable::kUps) return t;  // not usable
        t.ups = std::max(t.ups, ups + 1);
        t.byte[static_cast<std::size_t>(1 + ups)][static_cast<std::size_t>(b)] =
            static_cast<std::uint8_t>(p - 1);
      }
      for (int k = 0; k < -step; ++k, ++downs) {
        if (downs == BucketTable::kDowns) return t;
        t.downs = std::max(t.downs, downs + 1);
        t.byte[static_cast<std::size_t>(1 + BucketTable::kUps + downs)]
              [static_cast<std::size_t>(b)] = static_cast<std::uint8_t>(p - 1);
      }
    }
  }
  for (int x = -32768; x < 32768; ++x)
    if (t.at(static_cast<std::int16_t>(x)) != table[x]) return t;
  t.usable = true;
  return t;
}

#if VITC_HAVE_X86_TARGET_KERNELS
#if defined(__GNUC__) && !defined(__clang__)  // GCC bug 105593, as in detail/step_table.hpp
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
// 0, 2, ..., 126: the vpermi2b indices of the low bytes of two int16 vectors.
alignas(64) inline constexpr std::array<std::uint8_t, 64> kEvenBytes = [] {
  std::array<std::uint8_t, 64> even{};
  for (std::size_t i = 0; i < even.size(); ++i) even[i] = static_cast<std::uint8_t>(2 * i);
  return even;
}();

// row[bucket] for 64 byte lanes from a 256-byte row; high: the lanes with bucket >= 128. (A
// function, not a lambda: a lambda does not inherit its enclosing function's target.)
VITC_TARGET_AVX512VBMI inline __m512i bucket_byte(const std::uint8_t* row, __m512i bucket,
                                                  __mmask64 high) noexcept {
  const __m512i lo =
      _mm512_permutex2var_epi8(_mm512_load_si512(row), bucket, _mm512_load_si512(row + 64));
  const __m512i hi =
      _mm512_permutex2var_epi8(_mm512_load_si512(row + 128), bucket, _mm512_load_si512(row + 192));
  return _mm512_mask_blend_epi8(high, lo, hi);
}

// bucket_lookup_avx512vbmi reading the first kUps up and kDowns down tables (t.ups <= kUps,
// t.downs <= kDowns).
template <int kUps, int kDowns>
VITC_TARGET_AVX512VBMI inline void bucket_lookup_512(const BucketTable& t, const std::int16_t* in,
                                                     std::int8_t* out, Index n) noexcept {
  const __m512i even = _mm512_load_si512(kEvenBytes.data());  // low bytes of two int16 vectors
  const __m512i x0 = _mm512_set1_epi16(t.x0);
  const __m512i dmax = _mm512_set1_epi16(static_cast<std::int16_t>((256 << t.shift) - 1));
  const __m512i omask = _mm512_set1_epi16(static_cast<std::int16_t>((1 << t.shift) - 1));
  const __m128i shift = _mm_cvtsi32_si128(t.shift);
  const __m512i below = _mm512_set1_epi8(t.below), one = _mm512_set1_epi8(1);
  const std::uint8_t* bytes = t.byte[0].data();
  for (Index c = 0; c < n; c += 64) {
    const Index left = std::min<Index>(n - c, 64);
    const __mmask32 ka = left >= 32 ? ~__mmask32{0} : (__mmask32{1} << left) - 1;
    const __mmask32 kb = left >= 64  ? ~__mmask32{0}
                         : left > 32 ? (__mmask32{1} << (left - 32)) - 1
                                     : __mmask32{0};
    const __m512i xa = _mm512_maskz_loadu_epi16(ka, in + c);
    const __m512i xb = _mm512_maskz_loadu_epi16(kb, in + c + 32);
    const __mmask64 under = static_cast<__mmask64>(_mm512_cmplt_epi16_mask(xa, x0)) |
                            (static_cast<__mmask64>(_mm512_cmplt_epi16_mask(xb, x0)) << 32);
    const __m512i da = _mm512_min_epu16(_mm512_sub_epi16(xa, x0), dmax);
    const __m512i db = _mm512_min_epu16(_mm512_sub_epi16(xb, x0), dmax);
    const __m512i bucket =
        _mm512_permutex2var_epi8(_mm512_srl_epi16(da, shift), even, _mm512_srl_epi16(db, shift));
    const __m512i offset =
        _mm512_permutex2var_epi8(_mm512_and_si512(da, omask), even, _mm512_and_si512(db, omask));
    const __mmask64 high = _mm512_movepi8_mask(bucket);  // bucket >= 128
    __m512i code = bucket_byte(bytes, bucket, high);
    for (int j = 0; j < kUps; ++j)
      code = _mm512_mask_add_epi8(
          code, _mm512_cmpgt_epu8_mask(offset, bucket_byte(bytes + 256 * (1 + j), bucket, high)),
          code, one);
    for (int j = 0; j < kDowns; ++j)
      code = _mm512_mask_sub_epi8(
          code,
          _mm512_cmpgt_epu8_mask(
              offset, bucket_byte(bytes + 256 * (1 + BucketTable::kUps + j), bucket, high)),
          code, one);
    code = _mm512_mask_blend_epi8(under, code, below);
    const __mmask64 k = left >= 64 ? ~__mmask64{0} : (__mmask64{1} << left) - 1;
    _mm512_mask_storeu_epi8(out + c, k, code);
  }
}

// out[c] = table[in[c]] for c < n, from the bucket form (t.usable; the CPU has AVX-512 VBMI).
VITC_TARGET_AVX512VBMI inline void bucket_lookup_avx512vbmi(const BucketTable& t,
                                                            const std::int16_t* in,
                                                            std::int8_t* out, Index n) noexcept {
  // Each table read is two vpermi2b and a blend: read no more than the buckets use.
  if (t.downs <= 1) {
    if (t.ups <= 2)
      bucket_lookup_512<2, 1>(t, in, out, n);
    else if (t.ups == 3)
      bucket_lookup_512<3, 1>(t, in, out, n);
    else if (t.ups <= 4)
      bucket_lookup_512<4, 1>(t, in, out, n);
    else
      bucket_lookup_512<BucketTable::kUps, 1>(t, in, out, n);
  } else if (t.ups <= 4) {
    bucket_lookup_512<4, BucketTable::kDowns>(t, in, out, n);
  } else {
    bucket_lookup_512<BucketTable::kUps, BucketTable::kDowns>(t, in, out, n);
  }
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif

}  // namespace vitc::engine::detail
