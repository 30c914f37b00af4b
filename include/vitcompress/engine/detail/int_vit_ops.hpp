// SPDX-License-Identifier: Apache-2.0
#pragma once
// The integer loops of engine::IntViT that are not kernels: residual adds with requantization,
// the attention of one (image, head), and input quantization. See engine/int_vit.hpp.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "vitcompress/core/check.hpp"
#include "vitcompress/core/error.hpp"
#include "vitcompress/core/tensor.hpp"
#include "vitcompress/kernels/arch.hpp"
#include "vitcompress/kernels/fixed_point.hpp"

#if VITC_HAVE_X86_TARGET_KERNELS
#include <immintrin.h>
#endif

namespace vitc::engine::detail {

// A sum of integer terms at different real scales, requantized into one 8-bit residual code:
//
//   v_c = ⌊(acc·a1[c] + x·a2[c] + k[c] + 2^(e[c]−1)) / 2^e[c]⌋,   out_c = clamp(v_c, lo, hi)
//
// with a1[c] = round(acc_scale[c]/S_c·2^e[c]), a2[c] = round(in_scale[c]/S_c·2^e[c]) and
// k[c] = round(bias[c]/S_c·2^e[c]) (S_c the output scale of channel c, e[c] chosen so that
// max(a1, a2) <= 2^30). So v_c = round((acc·acc_scale + x·in_scale + bias)/S_c) up to a relative
// 2^−30 in each ratio: the fake-quant simulation's float sum, rounded once. All in 64 bits:
// |acc| < 2^31 gives |acc·a1| < 2^61, |x| <= 2^11 and |k| <= 2^61 keep the sum below 2^63.
struct Rescale {
  std::vector<std::int64_t> a1, a2, k;
  std::vector<std::int32_t> e;
  std::int32_t lo = 0, hi = 0;
};

// One channel's fixed-point constants for the ratios r1 = acc_scale/S, r2 = in_scale/S (0 if
// absent) and the real bias b/S.
[[nodiscard]] inline Rescale make_rescale(std::span<const double> acc_scale,
                                          std::span<const double> in_scale,
                                          std::span<const double> bias,
                                          std::span<const double> out_scale, std::int32_t lo,
                                          std::int32_t hi, const std::string& what) {
  const std::size_t n = out_scale.size();
  Rescale r;
  r.a1.resize(n);
  r.a2.resize(n);
  r.k.resize(n);
  r.e.resize(n);
  r.lo = lo;
  r.hi = hi;
  for (std::size_t c = 0; c < n; ++c) {
    const double s = out_scale[c];
    const double r1 = acc_scale[c] / s, r2 = in_scale.empty() ? 0.0 : in_scale[c] / s;
    if (!(r1 > 0.0) || !std::isfinite(r1) || !std::isfinite(r2) || r2 < 0.0)
      VITC_THROW(ArgumentError(what + ": scale ratio of channel " + std::to_string(c) +
                               " is not finite and positive"));
    const double m = std::max(r1, r2);
    int e = 30 - static_cast<int>(std::ceil(std::log2(m)));
    e = std::clamp(e, 1, 62);
    const double p = std::ldexp(1.0, e);
    r.a1[c] = static_cast<std::int64_t>(std::llround(r1 * p));
    r.a2[c] = static_cast<std::int64_t>(std::llround(r2 * p));
    const double kb = bias.empty() ? 0.0 : bias[c] / s * p;
    if (!std::isfinite(kb))
      VITC_THROW(ArgumentError(what + ": bias of channel " + std::to_string(c) + " is not finite"));
    r.k[c] = static_cast<std::int64_t>(std::clamp(std::nearbyint(kb), -0x1p61, 0x1p61));
    r.e[c] = e;
  }
  return r;
}

// out[c] = clamp(round((acc[c]·a1 + x[c]·a2 + k) / 2^e)) for one row, or with extra[c] in place
// of the x term; x and extra may be null (x may equal out).
inline void rescale_row(const Rescale& r, const std::int32_t* acc, const std::int16_t* x,
                        const std::int64_t* extra, std::int16_t* out, Index n) noexcept {
  const std::int64_t* a1 = r.a1.data();
  const std::int64_t* a2 = r.a2.data();
  const std::int64_t* k = r.k.data();
  const std::int32_t* e = r.e.data();
  const std::int64_t lo = r.lo, hi = r.hi;
  const auto finish = [&](Index c, std::int64_t num) {
    const std::int64_t v = (num + (std::int64_t{1} << (e[c] - 1))) >> e[c];
    out[c] = static_cast<std::int16_t>(std::clamp(v, lo, hi));
  };
  if (x != nullptr) {
    for (Index c = 0; c < n; ++c)
      finish(c, std::int64_t{acc[c]} * a1[c] + std::int64_t{x[c]} * a2[c] + k[c]);
  } else if (extra != nullptr) {
    for (Index c = 0; c < n; ++c) finish(c, std::int64_t{acc[c]} * a1[c] + k[c] + extra[c]);
  } else {
    for (Index c = 0; c < n; ++c) finish(c, std::int64_t{acc[c]} * a1[c] + k[c]);
  }
}

// Attention of one (image, head): for query rows i < qt and all t keys,
//   s_ij = Σ_d (q_id − zq)·k_jd            (int32, scale s_q·s_k/√d: exact integer Q·Kᵀ;
//                                             |s| <= 255·127·dqk, exact for dqk < 2^16)
//   P    = softmax_rows(s)                   (uint8, caller's kernel)
//   o_ic = clamp(zo + M·Σ_j P_ij·v_jc, 0, 255)   (proj input codes; M by fixed point)
struct AttentionShape {
  Index t = 0, qt = 0, dqk = 0, dv = 0;
  Index q_ld = 0, kv_ld = 0, out_ld = 0;
};

// Columns are processed in blocks of kAttnBlock int32 accumulators that stay in registers over
// the whole reduction; scratch rows are padded to a multiple of it (zeros).
inline constexpr Index kAttnBlock = 32;
[[nodiscard]] constexpr Index attn_padded(Index n) noexcept {
  return (n + kAttnBlock - 1) / kAttnBlock * kAttnBlock;
}

// kt: scratch of dqk·attn_padded(t) int16 (K transposed: the inner loop runs over keys).
inline void qk_scores(const AttentionShape& s, const std::uint8_t* q, std::int32_t zq,
                      const std::int8_t* k, std::int16_t* kt, std::int32_t* scores) noexcept {
  const Index t = s.t, dqk = s.dqk, tp = attn_padded(t);
  for (Index d = 0; d < dqk; ++d) {
    std::int16_t* kd = kt + d * tp;
    for (Index j = 0; j < t; ++j) kd[j] = k[j * s.kv_ld + d];
    for (Index j = t; j < tp; ++j) kd[j] = 0;
  }
  for (Index i = 0; i < s.qt; ++i) {
    const std::uint8_t* qi = q + i * s.q_ld;
    std::int32_t* row = scores + i * t;
    for (Index j0 = 0; j0 < t; j0 += kAttnBlock) {
      std::int32_t a[kAttnBlock] = {};
      for (Index d = 0; d < dqk; ++d) {
        const std::int32_t qd = static_cast<std::int32_t>(qi[d]) - zq;
        const std::int16_t* kd = kt + d * tp + j0;
        for (Index jj = 0; jj < kAttnBlock; ++jj) a[jj] += qd * static_cast<std::int32_t>(kd[jj]);
      }
      const Index n = std::min(kAttnBlock, t - j0);
      for (Index jj = 0; jj < n; ++jj) row[j0 + jj] = a[jj];
    }
  }
}

// v16: scratch of t·attn_padded(dv) int16 (V of this head, widened and padded once).
inline void pv_requant(const AttentionShape& s, const std::uint8_t* probs, const std::int8_t* v,
                       kernels::FixedPointMultiplier m, std::int32_t zo, std::int16_t* v16,
                       std::uint8_t* out) noexcept {
  const Index t = s.t, dv = s.dv, dp = attn_padded(dv);
  for (Index j = 0; j < t; ++j) {
    for (Index c = 0; c < dv; ++c) v16[j * dp + c] = v[j * s.kv_ld + c];
    for (Index c = dv; c < dp; ++c) v16[j * dp + c] = 0;
  }
  for (Index i = 0; i < s.qt; ++i) {
    const std::uint8_t* p = probs + i * t;
    std::uint8_t* o = out + i * s.out_ld;
    for (Index c0 = 0; c0 < dv; c0 += kAttnBlock) {
      std::int32_t a[kAttnBlock] = {};
      for (Index j = 0; j < t; ++j) {
        const std::int32_t pj = p[j];
        const std::int16_t* vj = v16 + j * dp + c0;
        for (Index cc = 0; cc < kAttnBlock; ++cc) a[cc] += pj * static_cast<std::int32_t>(vj[cc]);
      }
      const Index n = std::min(kAttnBlock, dv - c0);
      for (Index cc = 0; cc < n; ++cc)
        o[c0 + cc] = static_cast<std::uint8_t>(
            std::clamp(zo + kernels::multiply_by_fixed_point(a[cc], m), 0, 255));
    }
  }
}

#if VITC_HAVE_X86_TARGET_KERNELS
// The same two products with vpdpwssd (exact int16-pair dot products into int32): K and V are
// re-laid as int16 pairs along the reduction axis, so one instruction does 16 columns × 2 terms.
// Scratch: max(attn_padded(dqk)·attn_padded(t), attn_padded(t)·attn_padded(dv)) int16.
VITC_TARGET_AVX512VNNI inline void qk_scores_avx512(const AttentionShape& s, const std::uint8_t* q,
                                                    std::int32_t zq, const std::int8_t* k,
                                                    std::int16_t* kp,
                                                    std::int32_t* scores) noexcept {
  const Index t = s.t, dqk = s.dqk, tp = attn_padded(t), pairs = (dqk + 1) / 2;
  // kp[(d/2)·tp·2 + j·2 + (d%2)] = k[j][d] (0 beyond t or dqk).
  for (Index dp = 0; dp < pairs; ++dp) {
    std::int16_t* dst = kp + dp * tp * 2;
    const Index d0 = 2 * dp, d1 = 2 * dp + 1;
    for (Index j = 0; j < t; ++j) {
      dst[2 * j] = k[j * s.kv_ld + d0];
      dst[2 * j + 1] = d1 < dqk ? k[j * s.kv_ld + d1] : std::int16_t{0};
    }
    for (Index j = t; j < tp; ++j) dst[2 * j] = dst[2 * j + 1] = 0;
  }
  for (Index i = 0; i < s.qt; ++i) {
    const std::uint8_t* qi = q + i * s.q_ld;
    std::int32_t* row = scores + i * t;
    for (Index j0 = 0; j0 < t; j0 += kAttnBlock) {
      __m512i a0 = _mm512_setzero_si512(), a1 = _mm512_setzero_si512();
      for (Index dp = 0; dp < pairs; ++dp) {
        const std::int32_t q0 = static_cast<std::int32_t>(qi[2 * dp]) - zq;
        const std::int32_t q1 =
            2 * dp + 1 < dqk ? static_cast<std::int32_t>(qi[2 * dp + 1]) - zq : 0;
        const __m512i qq = _mm512_set1_epi32(static_cast<std::int32_t>(
            (static_cast<std::uint32_t>(q0) & 0xffffu) | (static_cast<std::uint32_t>(q1) << 16)));
        const std::int16_t* kr = kp + dp * tp * 2 + j0 * 2;
        a0 = _mm512_dpwssd_epi32(a0, qq, _mm512_loadu_si512(kr));
        a1 = _mm512_dpwssd_epi32(a1, qq, _mm512_loadu_si512(kr + 32));
      }
      const Index n = std::min(kAttnBlock, t - j0);
      const __mmask16 m0 = static_cast<__mmask16>(n >= 16 ? 0xffff : (1u << n) - 1);
      const __mmask16 m1 =
          static_cast<__mmask16>(n <= 16 ? 0 : (n >= 32 ? 0xffff : (1u << (n - 16)) - 1));
      _mm512_mask_storeu_epi32(row + j0, m0, a0);
      _mm512_mask_storeu_epi32(row + j0 + 16, m1, a1);
    }
  }
}

VITC_TARGET_AVX512VNNI inline void pv_requant_avx512(const AttentionShape& s,
                                                     const std::uint8_t* probs,
                                                     const std::int8_t* v,
                                                     kernels::FixedPointMultiplier m,
                                                     std::int32_t zo, std::int16_t* vp,
                                                     std::uint8_t* out) noexcept {
  const Index t = s.t, dv = s.dv, dp = attn_padded(dv), pairs = (t + 1) / 2;
  // vp[(j/2)·dp·2 + c·2 + (j%2)] = v[j][c] (0 beyond t or dv).
  for (Index jp = 0; jp < pairs; ++jp) {
    std::int16_t* dst = vp + jp * dp * 2;
    const Index j0 = 2 * jp, j1 = 2 * jp + 1;
    for (Index c = 0; c < dv; ++c) {
      dst[2 * c] = v[j0 * s.kv_ld + c];
      dst[2 * c + 1] = j1 < t ? v[j1 * s.kv_ld + c] : std::int8_t{0};
    }
    for (Index c = dv; c < dp; ++c) dst[2 * c] = dst[2 * c + 1] = 0;
  }
  alignas(64) std::int32_t a[kAttnBlock];
  for (Index i = 0; i < s.qt; ++i) {
    const std::uint8_t* p = probs + i * t;
    std::uint8_t* o = out + i * s.out_ld;
    for (Index c0 = 0; c0 < dv; c0 += kAttnBlock) {
      __m512i a0 = _mm512_setzero_si512(), a1 = _mm512_setzero_si512();
      for (Index jp = 0; jp < pairs; ++jp) {
        const std::uint32_t p0 = p[2 * jp];
        const std::uint32_t p1 = 2 * jp + 1 < t ? p[2 * jp + 1] : 0u;
        const __m512i pp = _mm512_set1_epi32(static_cast<std::int32_t>(p0 | (p1 << 16)));
        const std::int16_t* vr = vp + jp * dp * 2 + c0 * 2;
        a0 = _mm512_dpwssd_epi32(a0, pp, _mm512_loadu_si512(vr));
        a1 = _mm512_dpwssd_epi32(a1, pp, _mm512_loadu_si512(vr + 32));
      }
      _mm512_store_si512(a, a0);
      _mm512_store_si512(a + 16, a1);
      const Index n = std::min(kAttnBlock, dv - c0);
      for (Index cc = 0; cc < n; ++cc)
        o[c0 + cc] = static_cast<std::uint8_t>(
            std::clamp(zo + kernels::multiply_by_fixed_point(a[cc], m), 0, 255));
    }
  }
}
#endif

// Scratch int16 elements the attention of one head needs (either path).
[[nodiscard]] constexpr Index attention_scratch(Index t, Index dqk, Index dv) noexcept {
  return std::max(attn_padded(dqk + 1) * attn_padded(t), attn_padded(t + 1) * attn_padded(dv));
}

}  // namespace vitc::engine::detail
