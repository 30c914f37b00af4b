// SPDX-License-Identifier: Apache-2.0
#pragma once
// The batched float forward pass of a ViT (timm VisionTransformer / DeiT semantics).
//
//   images [B, C, H, W] --unfold--> patches [B*N, C*P*P] --GEMM--> + pos_embed, class token first
//   -> blocks (pre-norm attention and MLP, residual) -> final LayerNorm of the class tokens
//   -> head -> logits [B, classes]
//
// Every matrix product is an Eigen GEMM on row-major buffers (Eigen itself stays single-threaded);
// parallelism is ours: linear layers split the B*T token rows into blocks (or, when there are
// fewer rows than output channels, e.g. one image, the output channels, so that each thread packs
// only its share of the weights), attention splits into (image, head, query-row block) items, all
// over the ThreadPool given (nullptr = calling thread only). Every output element is computed by
// exactly one chunk; the tests check that one and two threads give bit-identical logits (Eigen's
// kernels sum each dot product in the same order whatever the block shape, which is observed, not
// a documented Eigen guarantee). Softmax, LayerNorm and GELU run as
// vectorized row loops. Only the class tokens go through the final norm and the head, and in an
// inference pass without hooks the last block's attention output, proj and MLP run on the class
// tokens only (nothing else reaches the logits): about 1/depth of the MLP work saved.
//
// Cost: config.macs_per_image() multiply-adds per image; memory: see ViTWorkspace.

#include <cmath>
#include <string>
#include <type_traits>

#include "vitcompress/core/error.hpp"
#include "vitcompress/core/parallel_for.hpp"
#include "vitcompress/core/tensor.hpp"
#include "vitcompress/model/detail/vit_ops.hpp"
#include "vitcompress/model/vit_config.hpp"
#include "vitcompress/model/vit_hooks.hpp"
#include "vitcompress/model/vit_weights.hpp"
#include "vitcompress/model/vit_workspace.hpp"

namespace vitc::model {

// Runs the model on `images` ([B, C, H, W], any strides) and writes `logits` ([B, classes], rows
// contiguous). Pass::kTraining keeps the activations for vit_backward(); Pass::kInference keeps
// nothing and touches less memory. `hooks` see every GEMM input (see vit_hooks.hpp).
// Throws ShapeError when images or logits disagree with the config or the weights with their
// config (naming the tensor).
template <class T, class Hooks = NoHooks>
requires ActivationHooks<Hooks, T>
void vit_forward(const ViTWeights<T>& weights, std::type_identity_t<TensorView<const T, 4>> images,
                 std::type_identity_t<TensorView<T, 2>> logits, ViTWorkspace<T>& workspace,
                 ThreadPool* pool = nullptr, Pass pass = Pass::kInference, Hooks&& hooks = Hooks{});

// Convenience: returns a new [B, classes] tensor of logits.
template <class T>
Tensor<T, 2> vit_logits(const ViTWeights<T>& weights,
                        std::type_identity_t<TensorView<const T, 4>> images,
                        ViTWorkspace<T>& workspace, ThreadPool* pool = nullptr) {
  Tensor<T, 2> logits({images.extent(0), weights.config.num_classes});
  vit_forward(weights, images, logits.view(), workspace, pool);
  return logits;
}

// ---------------------------------------------------------------------------------------------

namespace detail {

// Cheap per-pass structural check; the named diagnosis comes from check_shapes() on failure.
template <class T>
void check_weights_for_pass(const ViTWeights<T>& w) {
  const ViTConfig& c = w.config;
  bool ok = w.blocks.size() == c.blocks.size() &&
            w.patch_embed.weight.shape() ==
                Shape<4>{c.embed_dim, c.in_channels, c.patch_size, c.patch_size} &&
            w.pos_embed.shape() == Shape<3>{1, c.num_tokens(), c.embed_dim} &&
            w.head.weight.shape() == Shape<2>{c.num_classes, c.embed_dim};
  for (std::size_t i = 0; ok && i < w.blocks.size(); ++i) {
    const BlockConfig& bc = c.blocks[i];
    const BlockWeights<T>& b = w.blocks[i];
    ok = b.qkv.weight.shape() == Shape<2>{bc.qkv_rows(), c.embed_dim} &&
         b.qkv.bias.extent(0) == bc.qkv_rows() &&
         b.proj.weight.shape() == Shape<2>{c.embed_dim, bc.v_dim()} &&
         b.fc1.weight.shape() == Shape<2>{bc.mlp_hidden, c.embed_dim} &&
         b.fc1.bias.extent(0) == bc.mlp_hidden &&
         b.fc2.weight.shape() == Shape<2>{c.embed_dim, bc.mlp_hidden} &&
         b.norm1.weight.extent(0) == c.embed_dim && b.norm2.weight.extent(0) == c.embed_dim &&
         b.norm1.bias.extent(0) == c.embed_dim && b.norm2.bias.extent(0) == c.embed_dim &&
         b.proj.bias.extent(0) == c.embed_dim && b.fc2.bias.extent(0) == c.embed_dim;
  }
  ok = ok && w.patch_embed.bias.extent(0) == c.embed_dim &&
       w.cls_token.shape() == Shape<3>{1, 1, c.embed_dim} &&
       w.norm.weight.extent(0) == c.embed_dim && w.norm.bias.extent(0) == c.embed_dim &&
       w.head.bias.extent(0) == c.num_classes;
  if (!ok) w.check_shapes();
  if (!ok) VITC_THROW(ShapeError("ViTWeights: tensors disagree with their config"));
}

template <class T>
void check_images(const ViTConfig& c, const TensorView<const T, 4>& images) {
  const Shape<4> want{images.extent(0), c.in_channels, c.image_size, c.image_size};
  if (images.shape() != want || images.extent(0) <= 0)
    VITC_THROW(ShapeError("images: expected shape [B > 0, " + std::to_string(c.in_channels) + ", " +
                          std::to_string(c.image_size) + ", " + std::to_string(c.image_size) +
                          "], got " + vitc::detail::shape_string(images.shape())));
}

template <class T>
void check_logits(const ViTConfig& c, Index batch, const TensorView<T, 2>& logits) {
  if (logits.shape() != Shape<2>{batch, c.num_classes} ||
      (c.num_classes > 1 && logits.stride(1) != 1))
    VITC_THROW(ShapeError("logits: expected a row-contiguous view of shape [" +
                          std::to_string(batch) + ", " + std::to_string(c.num_classes) + "], got " +
                          vitc::detail::shape_string(logits.shape())));
}

// Sizes the workspace for one pass and records what it holds.
template <class T>
void prepare_workspace(ViTWorkspace<T>& ws, const ViTConfig& c, Index batch, Pass pass,
                       bool hooked) {
  const Index t = c.num_tokens(), m = batch * t, d = c.embed_dim;
  const bool training = pass == Pass::kTraining;
  const std::size_t depth = c.blocks.size();
  ws.config_ = c;
  ws.batch_ = batch;
  ws.has_activations_ = training;
  ws.hooked_probs_ = hooked && training;
  const std::size_t nres = training ? depth + 1 : 1, nblk = training ? depth : 1;
  if (ws.residual_.size() < nres) ws.residual_.resize(nres);
  if (ws.blocks_.size() < nblk) ws.blocks_.resize(nblk);
  for (std::size_t i = 0; i < nres; ++i) ws.residual_[i].get(m * d);
  for (std::size_t i = 0; i < nblk; ++i) {
    // Inference shares one set sized for the largest block.
    Index heads = 0, qkv = 0, vdim = 0, hidden = 0;
    for (std::size_t j = (training ? i : 0); j < (training ? i + 1 : depth); ++j) {
      const BlockConfig& bc = c.blocks[j];
      heads = std::max(heads, bc.num_heads);
      qkv = std::max(qkv, bc.qkv_rows());
      vdim = std::max(vdim, bc.v_dim());
      hidden = std::max(hidden, bc.mlp_hidden);
    }
    auto& b = ws.blocks_[i];
    b.ln1_out.get(m * d);
    b.qkv.get(m * qkv);
    b.probs.get(batch * heads * t * t);
    b.attn_out.get(m * vdim);
    b.ln2_out.get(m * d);
    b.fc2_in.get(m * hidden);
    if (training) {
      b.x_mid.get(m * d);
      b.ln1_mean.get(m);
      b.ln1_rstd.get(m);
      b.ln2_mean.get(m);
      b.ln2_rstd.get(m);
      b.fc1_pre.get(m * hidden);
      if (hooked) b.probs_hooked.get(batch * heads * t * t);
    }
  }
  ws.patches_.get(batch * c.num_patches() * c.patch_dim());
  ws.final_out_.get(batch * d);
  if (training) {
    ws.final_mean_.get(batch);
    ws.final_rstd_.get(batch);
  }
}

// Rows of a query block so that attention has enough items to balance over threads.
inline Index query_block_rows(Index tokens) {
  const Index blocks = (tokens + 63) / 64;
  return (tokens + blocks - 1) / blocks;
}

template <class T, class Hooks>
void block_forward(ThreadPool* pool, const ViTConfig& c, int l, const BlockWeights<T>& w,
                   Index batch, Mat<T> x_in, Mat<T> x_mid, Mat<T> x_out,
                   typename ViTWorkspace<T>::BlockBuffers& buf, bool training, bool cls_only,
                   Hooks& hooks) {
  const BlockConfig& bc = c.blocks[static_cast<std::size_t>(l)];
  const Index t = c.num_tokens(), m = batch * t, d = c.embed_dim;
  const Index heads = bc.num_heads, dqk = bc.qk_head_dim, dv = bc.v_head_dim;
  const Index rows = bc.qkv_rows(), vdim = bc.v_dim(), hidden = bc.mlp_hidden;
  const T eps = static_cast<T>(c.layer_norm_eps);
  constexpr bool kHooked = std::remove_cvref_t<Hooks>::kEnabled;

  hook_forward(hooks, HookSite::kBlockInput, l, x_in.view());
  Mat<T> ln1(buf.ln1_out.data(), m, d);
  layer_norm_forward<T>(pool, x_in, w.norm1, eps, ln1, training ? buf.ln1_mean.data() : nullptr,
                        training ? buf.ln1_rstd.data() : nullptr);
  hook_forward(hooks, HookSite::kQkvInput, l, ln1.view());
  Mat<T> qkv(buf.qkv.data(), m, rows);
  linear_forward<T>(pool, ln1, w.qkv, qkv);
  if constexpr (kHooked) {
    hook_forward(hooks, HookSite::kQuery, l, qkv.col_range(0, heads * dqk).view());
    hook_forward(hooks, HookSite::kKey, l, qkv.col_range(heads * dqk, 2 * heads * dqk).view());
    hook_forward(hooks, HookSite::kValue, l, qkv.col_range(2 * heads * dqk, rows).view());
  }

  // Attention, item = (image b, head h, query block qb). With cls_only, only the class token's
  // query (row 0 of each image) goes on: in the last block of an inference pass nothing else
  // reaches the logits, so attention output, proj and MLP run on B rows instead of B*T.
  const Index qt = cls_only ? 1 : t;
  const T scale = T(1) / std::sqrt(static_cast<T>(dqk));
  const Index qrows = query_block_rows(qt), nq = (qt + qrows - 1) / qrows;
  T* probs = buf.probs.data();
  Mat<T> attn(buf.attn_out.data(), m, vdim);
  const auto pv = [&](const T* p_base, Index item) {
    const Index bh = item / nq, q0 = (item % nq) * qrows, q1 = std::min(qt, q0 + qrows);
    const Index b = bh / heads, h = bh % heads;
    const Mat<const T> p(p_base + (bh * t + q0) * t, q1 - q0, t, t);
    const Mat<const T> v(qkv.row(b * t) + 2 * heads * dqk + h * dv, t, dv, rows);
    attn.row_range(b * t + q0, b * t + q1).col_range(h * dv, h * dv + dv).eigen().noalias() =
        p.eigen() * v.eigen();
  };
  parallel(pool, batch * heads * nq, 1, qrows * t * (dqk + dv), [&](Index i0, Index i1) {
    for (Index item = i0; item < i1; ++item) {
      const Index bh = item / nq, q0 = (item % nq) * qrows, q1 = std::min(qt, q0 + qrows);
      const Index b = bh / heads, h = bh % heads;
      const Mat<const T> q(qkv.row(b * t + q0) + h * dqk, q1 - q0, dqk, rows);
      const Mat<const T> k(qkv.row(b * t) + heads * dqk + h * dqk, t, dqk, rows);
      Mat<T> s(probs + (bh * t + q0) * t, q1 - q0, t, t);
      s.eigen().noalias() = scale * (q.eigen() * k.eigen().transpose());
      softmax_rows(s);
      if constexpr (!kHooked) pv(probs, item);
    }
  });
  if constexpr (kHooked) {
    T* consumed = probs;
    if (training) {
      consumed = buf.probs_hooked.data();
      std::memcpy(consumed, probs, static_cast<std::size_t>(batch * heads * t * t) * sizeof(T));
    }
    hook_forward(hooks, HookSite::kAttentionProbs, l,
                 Mat<T>(consumed, batch * heads * t, t).view());
    parallel(pool, batch * heads * nq, 1, qrows * t * dv, [&](Index i0, Index i1) {
      for (Index item = i0; item < i1; ++item) pv(consumed, item);
    });
  }

  // From here on rows are tokens (all of them, or the class tokens only).
  const auto sel = [&](Mat<T> full) {
    return cls_only ? Mat<T>(full.data, batch, full.cols, t * full.ld) : full;
  };
  const Index mr = cls_only ? batch : m;
  const Mat<T> attn_r = sel(attn), in_r = sel(x_in), mid_r = sel(x_mid), out_r = sel(x_out);
  hook_forward(hooks, HookSite::kProjInput, l, attn_r.view());
  const Mat<const T> res1 = in_r;
  linear_forward<T>(pool, attn_r, w.proj, mid_r, &res1);

  hook_forward(hooks, HookSite::kMlpResidual, l, mid_r.view());
  Mat<T> ln2(buf.ln2_out.data(), mr, d);
  layer_norm_forward<T>(pool, mid_r, w.norm2, eps, ln2, training ? buf.ln2_mean.data() : nullptr,
                        training ? buf.ln2_rstd.data() : nullptr);
  hook_forward(hooks, HookSite::kFc1Input, l, ln2.view());
  Mat<T> act(buf.fc2_in.data(), mr, hidden);
  Mat<T> pre = training ? Mat<T>(buf.fc1_pre.data(), mr, hidden) : act;
  linear_forward<T>(pool, ln2, w.fc1, pre, nullptr, [&](Index r0, Index r1, Index c0, Index c1) {
    if (c1 - c0 == hidden)
      gelu_forward(pre.row(r0), act.row(r0), (r1 - r0) * hidden);
    else
      for (Index r = r0; r < r1; ++r) gelu_forward(pre.row(r) + c0, act.row(r) + c0, c1 - c0);
  });
  hook_forward(hooks, HookSite::kFc2Input, l, act.view());
  const Mat<const T> res2 = mid_r;
  linear_forward<T>(pool, act, w.fc2, out_r, &res2);
}

}  // namespace detail

template <class T, class Hooks>
requires ActivationHooks<Hooks, T>
void vit_forward(const ViTWeights<T>& weights, std::type_identity_t<TensorView<const T, 4>> images,
                 std::type_identity_t<TensorView<T, 2>> logits, ViTWorkspace<T>& workspace,
                 ThreadPool* pool, Pass pass, Hooks&& hooks) {
  using namespace detail;
  const ViTConfig& c = weights.config;
  check_weights_for_pass(weights);
  check_images(c, images);
  const Index batch = images.extent(0);
  check_logits(c, batch, logits);
  constexpr bool kHooked = std::remove_cvref_t<Hooks>::kEnabled;
  const bool training = pass == Pass::kTraining;
  prepare_workspace(workspace, c, batch, pass, kHooked);

  const Index t = c.num_tokens(), d = c.embed_dim, np = c.num_patches(), m = batch * t;

  // Patch embedding, class token, position embedding.
  Mat<T> patches(workspace.patches_.data(), batch * np, c.patch_dim());
  unfold_patches<T>(pool, images, c.patch_size, patches);
  hook_forward(hooks, HookSite::kPatchInput, -1, patches.view());
  Mat<T> x0(workspace.residual_[0].data(), m, d);
  {
    const Mat<const T> pw(weights.patch_embed.weight.data(), d, c.patch_dim());
    const EigenArrayMap<const T> pb(weights.patch_embed.bias.data(), d);
    const T* pos = weights.pos_embed.data();
    const EigenArrayMap<const T> cls(weights.cls_token.data(), d);
    const auto pw_t = pw.eigen().transpose();
    parallel(pool, batch * np, 8, d * c.patch_dim(), [&](Index r0, Index r1) {
      // Rows [r0, r1) of the patch matrix, image by image (each image's rows are contiguous in x0).
      for (Index r = r0; r < r1;) {
        const Index b = r / np, p0 = r % np, p1 = std::min(np, p0 + (r1 - r));
        Mat<T> out = x0.row_range(b * t + 1 + p0, b * t + 1 + p1);
        for (Index p = p0; p < p1; ++p)
          EigenArrayMap<T>(out.row(p - p0), d) = EigenArrayMap<const T>(pos + (1 + p) * d, d) + pb;
        out.eigen().noalias() += patches.row_range(r, r + (p1 - p0)).eigen() * pw_t;
        r += p1 - p0;
      }
    });
    for (Index b = 0; b < batch; ++b)
      EigenArrayMap<T>(x0.row(b * t), d) = cls + EigenArrayMap<const T>(pos, d);
  }

  // Blocks.
  const int depth = static_cast<int>(c.blocks.size());
  for (int l = 0; l < depth; ++l) {
    auto& buf = workspace.blocks_[training ? static_cast<std::size_t>(l) : 0];
    Mat<T> x_in(workspace.residual_[training ? static_cast<std::size_t>(l) : 0].data(), m, d);
    Mat<T> x_out(workspace.residual_[training ? static_cast<std::size_t>(l) + 1 : 0].data(), m, d);
    Mat<T> x_mid = training ? Mat<T>(buf.x_mid.data(), m, d) : x_in;
    // The last block of an inference pass without hooks needs only the class tokens' outputs.
    const bool cls_only = !training && !kHooked && l == depth - 1;
    block_forward<T>(pool, c, l, weights.blocks[static_cast<std::size_t>(l)], batch, x_in, x_mid,
                     x_out, buf, training, cls_only, hooks);
  }

  // Final norm of the class tokens, head.
  Mat<T> x_last(workspace.residual_[training ? c.blocks.size() : 0].data(), batch, d, t * d);
  hook_forward(hooks, HookSite::kFinalNormInput, -1, x_last.view());
  Mat<T> z(workspace.final_out_.data(), batch, d);
  layer_norm_forward<T>(nullptr, x_last, weights.norm, static_cast<T>(c.layer_norm_eps), z,
                        training ? workspace.final_mean_.data() : nullptr,
                        training ? workspace.final_rstd_.data() : nullptr);
  hook_forward(hooks, HookSite::kHeadInput, -1, z.view());
  Mat<T> out(logits.data(), batch, c.num_classes, batch > 1 ? logits.stride(0) : c.num_classes);
  linear_forward<T>(pool, z, weights.head, out);
}

}  // namespace vitc::model
