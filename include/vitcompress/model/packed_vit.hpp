// SPDX-License-Identifier: Apache-2.0
#pragma once
// A float ViT ready for inference: every linear layer's weights packed once into GEMM panels
// (kernels/packed_weights_f32.hpp), and the activation buffers owned, so that a forward pass
// neither packs weights nor allocates (after the first pass at the largest batch).
//
// Why: vit_forward() (model/vit_forward.hpp) serves training too and hands every linear layer to
// Eigen, which re-packs the weight matrix on each call. For inference the weights never change;
// packing them at construction and running kernels::gemm_f32 on the panels removes that cost,
// which dominates on small models (the shipped Fashion-MNIST ViT spends more time packing than
// multiplying under Eigen).
//
// The pass computes what vit_forward(Pass::kInference) computes (same graph, timm DeiT
// semantics), with these operations:
//   patch embedding   gemm_f32(patches, W_patch) + bias + pos_embed (fused epilogue), per image
//   LayerNorm, GELU   row loops on Eigen arrays (vectorized), as vit_forward
//   qkv, fc1          gemm_f32 + bias;  proj, fc2: gemm_f32 + bias + residual, in place
//   attention         per (image, head): Kᵀ and V packed into panels (O(T·d), cheap), then per
//                     (image, head, query block) S = Q·Kᵀ by gemm_f32, softmax(scale·S) in place,
//                     O = P·V by gemm_f32 straight into the head's columns
//   last block        only the class tokens' rows after attention (nothing else reaches logits)
// Results differ from vit_forward's by float rounding only (different summation order); they
// do not depend on the number of threads (every GEMM element has one fixed fma order, every
// row loop is per row), which the tests check bit for bit.
//
// The GEMM path is chosen once at construction (kernels::arch::best_arch(), VITC_ARCH honoured).
// A PackedViT serves one forward at a time (its buffers are shared state); use one per caller
// thread. Memory: packed weights ≈ the float weights; buffers as ViTWorkspace's inference set
// plus packed Kᵀ/V (≈ 2·T·D floats per image).

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "vitcompress/core/error.hpp"
#include "vitcompress/core/parallel_for.hpp"
#include "vitcompress/core/tensor.hpp"
#include "vitcompress/kernels/arch.hpp"
#include "vitcompress/kernels/gemm_f32.hpp"
#include "vitcompress/kernels/packed_weights_f32.hpp"
#include "vitcompress/model/detail/vit_ops.hpp"
#include "vitcompress/model/vit_config.hpp"
#include "vitcompress/model/vit_forward.hpp"
#include "vitcompress/model/vit_weights.hpp"

namespace vitc::model {

class PackedViT {
 public:
  // Packs `weights` (validated against their config; ShapeError names a bad tensor). The
  // PackedViT keeps its own copies: `weights` may be destroyed afterwards.
  explicit PackedViT(const ViTWeights<float>& weights);

  [[nodiscard]] const ViTConfig& config() const noexcept { return config_; }
  [[nodiscard]] Index num_classes() const noexcept { return config_.num_classes; }
  // The GEMM path in use (kernels::arch::arch_name gives its name).
  [[nodiscard]] kernels::arch::ArchId arch() const noexcept { return arch_; }
  // Bytes of packed linear weights.
  [[nodiscard]] Index packed_weight_bytes() const noexcept;

  // logits [B, classes] (rows contiguous) of images [B, C, H, W] (any strides). `pool` splits
  // the work (nullptr: the calling thread only). Throws ShapeError on mismatched shapes.
  void forward(TensorView<const float, 4> images, TensorView<float, 2> logits,
               ThreadPool* pool = nullptr);

 private:
  struct Linear {
    kernels::PackedWeightsF32 w;
    Tensor<float, 1> bias;
  };
  struct Block {
    LayerNormWeights<float> norm1, norm2;
    Linear qkv, proj, fc1, fc2;
  };
  struct Buffer {
    Tensor<float, 1> t;
    float* get(Index n) {
      if (t.size() < n) t = Tensor<float, 1>({std::max<Index>(n, 1)});
      return t.data();
    }
  };

  static Linear pack_linear(const LinearWeights<float>& lw) {
    return {kernels::PackedWeightsF32::from_out_in(lw.weight.cview()), lw.bias};
  }

  template <class Tag>
  void forward_impl(TensorView<const float, 4> images, TensorView<float, 2> logits,
                    ThreadPool* pool);
  template <class Tag>
  void block_forward(const Block& blk, const BlockConfig& bc, Index batch, bool cls_only,
                     ThreadPool* pool);
  template <class Tag>
  static void gemm(ThreadPool* pool, detail::Mat<const float> a, const kernels::PackedPanelsF32& b,
                   detail::Mat<float> c, const float* bias, const detail::Mat<const float>* res,
                   kernels::GemmF32Workspace* ws = nullptr);

  ViTConfig config_;
  kernels::arch::ArchId arch_ = kernels::arch::ArchId::kScalar;
  Linear patch_, head_;
  Tensor<float, 1> cls_pos_;  // cls_token + pos_embed[0]
  Tensor<float, 2> pos_;      // pos_embed [T, D]
  LayerNormWeights<float> norm_;
  std::vector<Block> blocks_;
  Buffer patches_, x_, ln_, qkv_, attn_, hidden_, probs_, kpack_, vpack_, final_;
  kernels::GemmF32Workspace gemm_ws_;  // partial sums of deep linear layers (K > 2048)
};

// ---------------------------------------------------------------------------------------------

inline PackedViT::PackedViT(const ViTWeights<float>& weights) : config_(weights.config) {
  detail::check_weights_for_pass(weights);
  const ViTConfig& c = config_;
  const Index d = c.embed_dim, t = c.num_tokens();
  arch_ = kernels::arch::best_arch();
  // The Conv2d kernel [D, C, P, P] is the [D, C·P·P] weight of the patch GEMM.
  const TensorView<const float, 2> pw(weights.patch_embed.weight.data(), {d, c.patch_dim()},
                                      {c.patch_dim(), 1});
  patch_ = {kernels::PackedWeightsF32::from_out_in(pw), weights.patch_embed.bias};
  head_ = pack_linear(weights.head);
  norm_ = weights.norm;
  pos_ = Tensor<float, 2>({t, d});
  std::copy(weights.pos_embed.data(), weights.pos_embed.data() + t * d, pos_.data());
  cls_pos_ = Tensor<float, 1>({d});
  for (Index j = 0; j < d; ++j) cls_pos_(j) = weights.cls_token.data()[j] + pos_(0, j);
  blocks_.reserve(weights.blocks.size());
  for (const BlockWeights<float>& b : weights.blocks)
    blocks_.push_back({b.norm1, b.norm2, pack_linear(b.qkv), pack_linear(b.proj),
                       pack_linear(b.fc1), pack_linear(b.fc2)});
}

inline Index PackedViT::packed_weight_bytes() const noexcept {
  Index n = patch_.w.bytes() + head_.w.bytes();
  for (const Block& b : blocks_)
    n += b.qkv.w.bytes() + b.proj.w.bytes() + b.fc1.w.bytes() + b.fc2.w.bytes();
  return n;
}

inline void PackedViT::forward(TensorView<const float, 4> images, TensorView<float, 2> logits,
                               ThreadPool* pool) {
  const ViTConfig& c = config_;
  detail::check_images(c, images);
  const Index batch = images.extent(0);
  detail::check_logits(c, batch, logits);
  kernels::arch::dispatch(arch_,
                          [&](auto tag) { forward_impl<decltype(tag)>(images, logits, pool); });
}

template <class Tag>
void PackedViT::gemm(ThreadPool* pool, detail::Mat<const float> a,
                     const kernels::PackedPanelsF32& b, detail::Mat<float> c, const float* bias,
                     const detail::Mat<const float>* res, kernels::GemmF32Workspace* ws) {
  kernels::GemmF32Epilogue ep;
  if (bias != nullptr) ep.bias = TensorView<const float, 1>(bias, {c.cols}, {1});
  if (res != nullptr) ep.residual = res->view();
  if (pool != nullptr)
    kernels::gemm_f32<Tag>(a.view(), b, c.view(), ep, *pool, ws);
  else
    kernels::gemm_f32<Tag>(a.view(), b, c.view(), ep, Sequential{}, ws);
}

template <class Tag>
void PackedViT::forward_impl(TensorView<const float, 4> images, TensorView<float, 2> logits,
                             ThreadPool* pool) {
  using detail::Mat;
  const ViTConfig& c = config_;
  const Index batch = images.extent(0), t = c.num_tokens(), d = c.embed_dim;
  const Index np = c.num_patches(), m = batch * t;
  Index qkv_max = 0, vdim_max = 0, hidden_max = 0, heads_max = 0, kpack_max = 0, vpack_max = 0;
  for (const BlockConfig& bc : c.blocks) {
    qkv_max = std::max(qkv_max, bc.qkv_rows());
    vdim_max = std::max(vdim_max, bc.v_dim());
    hidden_max = std::max(hidden_max, bc.mlp_hidden);
    heads_max = std::max(heads_max, bc.num_heads);
    kpack_max = std::max(kpack_max, bc.num_heads * kernels::packed_f32_floats(bc.qk_head_dim, t));
    vpack_max = std::max(vpack_max, bc.num_heads * kernels::packed_f32_floats(t, bc.v_head_dim));
  }
  patches_.get(batch * np * c.patch_dim());
  x_.get(m * d);
  ln_.get(m * d);
  qkv_.get(m * qkv_max);
  attn_.get(m * vdim_max);
  hidden_.get(m * hidden_max);
  probs_.get(batch * heads_max * t * t);
  kpack_.get(batch * kpack_max);
  vpack_.get(batch * vpack_max);
  final_.get(batch * d);

  // Patch embedding: rows 1..T-1 of each image = patches·W + bias + pos_embed[1..]; row 0 =
  // cls_token + pos_embed[0].
  Mat<float> patches(patches_.t.data(), batch * np, c.patch_dim());
  detail::unfold_patches<float>(pool, images, c.patch_size, patches);
  Mat<float> x(x_.t.data(), m, d);
  const Mat<const float> pos_rest(pos_.data() + d, np, d);
  for (Index b = 0; b < batch; ++b) {
    gemm<Tag>(pool, patches.row_range(b * np, (b + 1) * np), patch_.w.view(),
              x.row_range(b * t + 1, (b + 1) * t), patch_.bias.data(), &pos_rest);
    std::copy(cls_pos_.data(), cls_pos_.data() + d, x.row(b * t));
  }

  const int depth = static_cast<int>(blocks_.size());
  for (int l = 0; l < depth; ++l)
    block_forward<Tag>(blocks_[static_cast<std::size_t>(l)], c.blocks[static_cast<std::size_t>(l)],
                       batch, l == depth - 1, pool);

  // Final norm of the class tokens, head.
  const Mat<const float> x_cls(x_.t.data(), batch, d, t * d);
  Mat<float> z(final_.t.data(), batch, d);
  detail::layer_norm_forward<float>(nullptr, x_cls, norm_, static_cast<float>(c.layer_norm_eps), z,
                                    nullptr, nullptr);
  Mat<float> out(logits.data(), batch, c.num_classes, batch > 1 ? logits.stride(0) : c.num_classes);
  gemm<Tag>(pool, z, head_.w.view(), out, head_.bias.data(), nullptr);
}

template <class Tag>
void PackedViT::block_forward(const Block& blk, const BlockConfig& bc, Index batch, bool cls_only,
                              ThreadPool* pool) {
  using detail::Mat;
  const ViTConfig& c = config_;
  const Index t = c.num_tokens(), m = batch * t, d = c.embed_dim;
  const Index heads = bc.num_heads, dqk = bc.qk_head_dim, dv = bc.v_head_dim;
  const Index rows = bc.qkv_rows(), vdim = bc.v_dim(), hidden = bc.mlp_hidden;
  const float eps = static_cast<float>(c.layer_norm_eps);

  Mat<float> x(x_.t.data(), m, d);
  Mat<float> ln1(ln_.t.data(), m, d);
  detail::layer_norm_forward<float>(pool, x, blk.norm1, eps, ln1, nullptr, nullptr);
  Mat<float> qkv(qkv_.t.data(), m, rows);
  gemm<Tag>(pool, ln1, blk.qkv.w.view(), qkv, blk.qkv.bias.data(), nullptr, &gemm_ws_);

  // Attention. Pack Kᵀ [dqk × T] and V [T × dv] of every (image, head) into panels.
  const Index kp = kernels::packed_f32_floats(dqk, t), vp = kernels::packed_f32_floats(t, dv);
  float* kpack = kpack_.t.data();
  float* vpack = vpack_.t.data();
  detail::parallel(pool, batch * heads, 1, t * (dqk + dv), [&](Index i0, Index i1) {
    for (Index bh = i0; bh < i1; ++bh) {
      const Index b = bh / heads, h = bh % heads;
      const float* k0 = qkv.row(b * t) + heads * dqk + h * dqk;
      kernels::pack_b_f32(TensorView<const float, 2>(k0, {dqk, t}, {1, rows}), kpack + bh * kp);
      const float* v0 = qkv.row(b * t) + 2 * heads * dqk + h * dv;
      kernels::pack_b_f32(TensorView<const float, 2>(v0, {t, dv}, {rows, 1}), vpack + bh * vp);
    }
  });
  const Index qt = cls_only ? 1 : t;
  const float scale = 1.0F / std::sqrt(static_cast<float>(dqk));
  const Index qrows = detail::query_block_rows(qt), nq = (qt + qrows - 1) / qrows;
  float* probs = probs_.t.data();
  Mat<float> attn(attn_.t.data(), m, vdim);
  detail::parallel(pool, batch * heads * nq, 1, qrows * t * (dqk + dv), [&](Index i0, Index i1) {
    for (Index item = i0; item < i1; ++item) {
      const Index bh = item / nq, q0 = (item % nq) * qrows, q1 = std::min(qt, q0 + qrows);
      const Index b = bh / heads, h = bh % heads;
      const Mat<const float> q(qkv.row(b * t + q0) + h * dqk, q1 - q0, dqk, rows);
      Mat<float> s(probs + (bh * t + q0) * t, q1 - q0, t, t);
      gemm<Tag>(nullptr, q, kernels::PackedPanelsF32{kpack + bh * kp, dqk, t}, s, nullptr, nullptr);
      for (Index r = 0; r < s.rows; ++r) detail::softmax_row_inplace(s.row(r), t, scale);
      gemm<Tag>(nullptr, s, kernels::PackedPanelsF32{vpack + bh * vp, t, dv},
                attn.row_range(b * t + q0, b * t + q1).col_range(h * dv, h * dv + dv), nullptr,
                nullptr);
    }
  });

  // From here on rows are tokens (all, or the class tokens only in the last block).
  const auto sel = [&](Mat<float> full) {
    return cls_only ? Mat<float>(full.data, batch, full.cols, t * full.ld) : full;
  };
  const Index mr = cls_only ? batch : m;
  const Mat<float> attn_r = sel(attn), x_r = sel(x);
  const Mat<const float> res = x_r;
  gemm<Tag>(pool, attn_r, blk.proj.w.view(), x_r, blk.proj.bias.data(), &res, &gemm_ws_);

  Mat<float> ln2(ln_.t.data(), mr, d);
  detail::layer_norm_forward<float>(pool, x_r, blk.norm2, eps, ln2, nullptr, nullptr);
  Mat<float> act(hidden_.t.data(), mr, hidden);
  gemm<Tag>(pool, ln2, blk.fc1.w.view(), act, blk.fc1.bias.data(), nullptr, &gemm_ws_);
  detail::parallel(pool, mr, 4, 16 * hidden, [&](Index r0, Index r1) {
    detail::gelu_forward(act.row(r0), act.row(r0), (r1 - r0) * hidden);
  });
  gemm<Tag>(pool, act, blk.fc2.w.view(), x_r, blk.fc2.bias.data(), &res, &gemm_ws_);
}

}  // namespace vitc::model
