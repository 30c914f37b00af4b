// SPDX-License-Identifier: Apache-2.0
#pragma once
// The backward pass of the float ViT: gradients of every parameter (under the same names and
// shapes as the weights, in a ViTWeights<T> used as a gradient container) and, optionally, of the
// input images, given the gradient of a scalar loss with respect to the logits.
//
// It replays vit_forward()'s graph in reverse from the activations a Pass::kTraining forward kept
// in the workspace: linear layers give dW += dY^T X, db += colsum(dY), dX = dY W; LayerNorm,
// softmax and GELU use their closed-form derivatives (the GELU's from the exact erf form). The
// work is split like forward: token rows (or input channels, when tokens are few) for dX, output
// channels for dW and LayerNorm parameters (so that no two threads add into the same gradient
// entry), (image, head) pairs for attention.
//
// GradMode::kOverwrite replaces the gradients (a training step); GradMode::kAccumulate adds to them
// (importance estimators summing over calibration batches). The gradient of the mean
// cross-entropy with respect to the logits comes from softmax_cross_entropy() (model/loss.hpp).
//
// Cost: about twice the forward's multiply-adds (dX and dW of every GEMM).

#include <algorithm>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "vitcompress/core/error.hpp"
#include "vitcompress/core/parallel_for.hpp"
#include "vitcompress/core/tensor.hpp"
#include "vitcompress/model/detail/vit_ops.hpp"
#include "vitcompress/model/vit_forward.hpp"
#include "vitcompress/model/vit_hooks.hpp"
#include "vitcompress/model/vit_weights.hpp"
#include "vitcompress/model/vit_workspace.hpp"

namespace vitc::model {

enum class GradMode {
  kOverwrite,   // gradients = this batch's
  kAccumulate,  // gradients += this batch's
};

// Backward of the last vit_forward(weights, images, ..., workspace, pool, Pass::kTraining, hooks).
//   grad_logits  [B, classes]: d loss / d logits
//   grads        receives the parameter gradients; a default-constructed ViTWeights is allocated
//                to the weights' config, otherwise its shapes must equal the weights' (ShapeError)
//   grad_images  [B, C, H, W] (any strides) receives d loss / d images (overwritten), or pass an
//                empty view to skip that work
// The same `hooks` as in the forward pass get their backward calls. Throws ArgumentError when the
// workspace does not hold a training-mode forward of this config and batch.
template <class T, class Hooks = NoHooks>
requires ActivationHooks<Hooks, T>
void vit_backward(const ViTWeights<T>& weights, ViTWorkspace<T>& workspace,
                  std::type_identity_t<TensorView<const T, 2>> grad_logits, ViTWeights<T>& grads,
                  GradMode mode = GradMode::kOverwrite, ThreadPool* pool = nullptr,
                  std::type_identity_t<TensorView<T, 4>> grad_images = {}, Hooks&& hooks = Hooks{});

// ---------------------------------------------------------------------------------------------

namespace detail {

template <class T, class Hooks>
void block_backward(ThreadPool* pool, const ViTConfig& c, int l, const BlockWeights<T>& w,
                    BlockWeights<T>& g, Index batch, Mat<const T> x_in, Mat<const T> x_mid,
                    typename ViTWorkspace<T>::BlockBuffers& buf, ViTWorkspace<T>& ws,
                    bool hooked_probs, Hooks& hooks) {
  const BlockConfig& bc = c.blocks[static_cast<std::size_t>(l)];
  const Index t = c.num_tokens(), m = batch * t, d = c.embed_dim;
  const Index heads = bc.num_heads, dqk = bc.qk_head_dim, dv = bc.v_head_dim;
  const Index rows = bc.qkv_rows(), vdim = bc.v_dim(), hidden = bc.mlp_hidden;
  constexpr bool kHooked = std::remove_cvref_t<Hooks>::kEnabled;

  Mat<T> d_resid(ws.d_resid_.data(), m, d);
  Mat<T> d_ln(ws.d_ln_out_.data(), m, d);
  T* xhat = ws.xhat_.data();

  // MLP: x_out = x_mid + fc2(gelu(fc1(norm2(x_mid)))).
  const Mat<const T> act(buf.fc2_in.data(), m, hidden), pre(buf.fc1_pre.data(), m, hidden);
  Mat<T> d_hidden(ws.d_hidden_.data(), m, hidden);
  linear_backward<T>(pool, act, d_resid, w.fc2, g.fc2, d_hidden);
  hook_backward<Hooks, T>(hooks, HookSite::kFc2Input, l, act.view(), d_hidden.view());
  parallel(pool, m, 8, hidden * 16, [&](Index r0, Index r1) {
    gelu_backward(pre.row(r0), d_hidden.row(r0), (r1 - r0) * hidden);
  });
  const Mat<const T> ln2(buf.ln2_out.data(), m, d);
  linear_backward<T>(pool, ln2, d_hidden, w.fc1, g.fc1, d_ln);
  hook_backward<Hooks, T>(hooks, HookSite::kFc1Input, l, ln2.view(), d_ln.view());
  layer_norm_backward<T>(pool, x_mid, buf.ln2_mean.data(), buf.ln2_rstd.data(), d_ln, w.norm2,
                         g.norm2, d_resid, xhat);
  hook_backward<Hooks, T>(hooks, HookSite::kMlpResidual, l, x_mid.view(), d_resid.view());

  // Attention: x_mid = x_in + proj(attention(norm1(x_in))).
  const Mat<const T> attn(buf.attn_out.data(), m, vdim);
  Mat<T> d_attn(ws.d_attn_out_.data(), m, vdim);
  linear_backward<T>(pool, attn, d_resid, w.proj, g.proj, d_attn);
  hook_backward<Hooks, T>(hooks, HookSite::kProjInput, l, attn.view(), d_attn.view());

  const Mat<const T> qkv(buf.qkv.data(), m, rows);
  Mat<T> d_qkv(ws.d_qkv_.data(), m, rows);
  const T* probs = buf.probs.data();
  const T* consumed = hooked_probs ? buf.probs_hooked.data() : probs;
  T* d_probs = ws.d_probs_.data();
  const T scale = T(1) / std::sqrt(static_cast<T>(dqk));
  // Phase A: dV = P'^T dO and dP' = dO V^T (P' = what P x V consumed).
  const auto phase_a = [&](Index bh) {
    const Index b = bh / heads, h = bh % heads;
    const Mat<const T> p(consumed + bh * t * t, t, t);
    const Mat<const T> d_o =
        Mat<const T>(d_attn).row_range(b * t, b * t + t).col_range(h * dv, h * dv + dv);
    const Mat<const T> v(qkv.row(b * t) + 2 * heads * dqk + h * dv, t, dv, rows);
    Mat<T> d_v(d_qkv.row(b * t) + 2 * heads * dqk + h * dv, t, dv, rows);
    d_v.eigen().noalias() = p.eigen().transpose() * d_o.eigen();
    Mat<T> dp(d_probs + bh * t * t, t, t);
    dp.eigen().noalias() = d_o.eigen() * v.eigen().transpose();
  };
  // Phase B: dS = softmax'(dP), dQ = scale dS K, dK = scale dS^T Q.
  const auto phase_b = [&](Index bh) {
    const Index b = bh / heads, h = bh % heads;
    Mat<T> ds(d_probs + bh * t * t, t, t);
    softmax_backward_rows(Mat<const T>(probs + bh * t * t, t, t), ds);
    const Mat<const T> q(qkv.row(b * t) + h * dqk, t, dqk, rows);
    const Mat<const T> k(qkv.row(b * t) + heads * dqk + h * dqk, t, dqk, rows);
    Mat<T> d_q(d_qkv.row(b * t) + h * dqk, t, dqk, rows);
    Mat<T> d_k(d_qkv.row(b * t) + heads * dqk + h * dqk, t, dqk, rows);
    d_q.eigen().noalias() = scale * (ds.eigen() * k.eigen());
    d_k.eigen().noalias() = scale * (ds.eigen().transpose() * q.eigen());
  };
  const Index work = t * t * (2 * dqk + 2 * dv);
  if constexpr (kHooked) {
    parallel(pool, batch * heads, 1, work, [&](Index i0, Index i1) {
      for (Index bh = i0; bh < i1; ++bh) phase_a(bh);
    });
    hook_backward<Hooks, T>(hooks, HookSite::kAttentionProbs, l,
                            Mat<const T>(consumed, batch * heads * t, t).view(),
                            Mat<T>(d_probs, batch * heads * t, t).view());
    parallel(pool, batch * heads, 1, work, [&](Index i0, Index i1) {
      for (Index bh = i0; bh < i1; ++bh) phase_b(bh);
    });
    hook_backward<Hooks, T>(hooks, HookSite::kQuery, l, qkv.col_range(0, heads * dqk).view(),
                            d_qkv.col_range(0, heads * dqk).view());
    hook_backward<Hooks, T>(hooks, HookSite::kKey, l,
                            qkv.col_range(heads * dqk, 2 * heads * dqk).view(),
                            d_qkv.col_range(heads * dqk, 2 * heads * dqk).view());
    hook_backward<Hooks, T>(hooks, HookSite::kValue, l, qkv.col_range(2 * heads * dqk, rows).view(),
                            d_qkv.col_range(2 * heads * dqk, rows).view());
  } else {
    parallel(pool, batch * heads, 1, work, [&](Index i0, Index i1) {
      for (Index bh = i0; bh < i1; ++bh) {
        phase_a(bh);
        phase_b(bh);
      }
    });
  }

  const Mat<const T> ln1(buf.ln1_out.data(), m, d);
  linear_backward<T>(pool, ln1, d_qkv, w.qkv, g.qkv, d_ln);
  hook_backward<Hooks, T>(hooks, HookSite::kQkvInput, l, ln1.view(), d_ln.view());
  layer_norm_backward<T>(pool, x_in, buf.ln1_mean.data(), buf.ln1_rstd.data(), d_ln, w.norm1,
                         g.norm1, d_resid, xhat);
  hook_backward<Hooks, T>(hooks, HookSite::kBlockInput, l, x_in.view(), d_resid.view());
}

template <class T>
bool same_shapes(const ViTWeights<T>& a, const ViTWeights<T>& b) {
  if (!(a.config == b.config) || a.blocks.size() != b.blocks.size()) return false;
  bool same = true;
  std::vector<std::vector<Index>> shapes;
  a.for_each([&](const std::string&, const auto& v) {
    shapes.emplace_back(v.shape().begin(), v.shape().end());
  });
  std::size_t k = 0;
  b.for_each([&](const std::string&, const auto& v) {
    same = same && k < shapes.size() &&
           std::vector<Index>(v.shape().begin(), v.shape().end()) == shapes[k];
    ++k;
  });
  return same && k == shapes.size();
}

}  // namespace detail

template <class T, class Hooks>
requires ActivationHooks<Hooks, T>
void vit_backward(const ViTWeights<T>& weights, ViTWorkspace<T>& ws,
                  std::type_identity_t<TensorView<const T, 2>> grad_logits, ViTWeights<T>& grads,
                  GradMode mode, ThreadPool* pool,
                  std::type_identity_t<TensorView<T, 4>> grad_images, Hooks&& hooks) {
  using namespace detail;
  const ViTConfig& c = weights.config;
  check_weights_for_pass(weights);
  const Index batch = ws.batch();
  if (!ws.has_activations() || !(ws.config_ == c))
    VITC_THROW(ArgumentError(
        "vit_backward: workspace: no training-mode forward pass of this model precedes backward"));
  if (grad_logits.shape() != Shape<2>{batch, c.num_classes} ||
      (c.num_classes > 1 && grad_logits.stride(1) != 1))
    VITC_THROW(ShapeError("grad_logits: expected a row-contiguous view of shape [" +
                          std::to_string(batch) + ", " + std::to_string(c.num_classes) + "], got " +
                          vitc::detail::shape_string(grad_logits.shape())));
  const bool want_images = !grad_images.empty() || grad_images.data() != nullptr;
  if (want_images &&
      grad_images.shape() != Shape<4>{batch, c.in_channels, c.image_size, c.image_size})
    VITC_THROW(ShapeError("grad_images: expected shape [" + std::to_string(batch) + ", " +
                          std::to_string(c.in_channels) + ", " + std::to_string(c.image_size) +
                          ", " + std::to_string(c.image_size) + "], got " +
                          vitc::detail::shape_string(grad_images.shape())));
  if (grads.blocks.empty() && grads.head.weight.empty()) {
    grads = ViTWeights<T>(c);
  } else if (!same_shapes(weights, grads)) {
    VITC_THROW(
        ShapeError("grads: the gradient container's config or shapes differ from the "
                   "weights'"));
  } else if (mode == GradMode::kOverwrite) {
    grads.set_zero();
  }

  const Index t = c.num_tokens(), d = c.embed_dim, np = c.num_patches(), m = batch * t;
  const Index cpp = c.patch_dim();
  Index max_rows = 0, max_vdim = 0, max_hidden = 0, max_heads = 0;
  for (const BlockConfig& bc : c.blocks) {
    max_rows = std::max(max_rows, bc.qkv_rows());
    max_vdim = std::max(max_vdim, bc.v_dim());
    max_hidden = std::max(max_hidden, bc.mlp_hidden);
    max_heads = std::max(max_heads, bc.num_heads);
  }
  ws.d_resid_.get(m * d);
  ws.d_ln_out_.get(m * d);
  ws.xhat_.get(m * d);
  ws.d_qkv_.get(m * max_rows);
  ws.d_attn_out_.get(m * max_vdim);
  ws.d_probs_.get(batch * max_heads * t * t);
  ws.d_hidden_.get(m * max_hidden);
  ws.d_head_in_.get(batch * d);
  if (want_images) ws.d_patches_.get(batch * np * cpp);

  // Head and final norm (class-token rows only).
  const Mat<const T> z(ws.final_out_.data(), batch, d);
  const Mat<const T> dlog(grad_logits.data(), batch, c.num_classes,
                          batch > 1 ? grad_logits.stride(0) : c.num_classes);
  Mat<T> dz(ws.d_head_in_.data(), batch, d);
  linear_backward<T>(pool, z, dlog, weights.head, grads.head, dz);
  hook_backward<Hooks, T>(hooks, HookSite::kHeadInput, -1, z.view(), dz.view());
  Mat<T> d_resid(ws.d_resid_.data(), m, d);
  std::memset(d_resid.data, 0, static_cast<std::size_t>(m * d) * sizeof(T));
  const std::size_t depth = c.blocks.size();
  const Mat<const T> x_last(ws.residual_[depth].data(), batch, d, t * d);
  Mat<T> d_last(d_resid.data, batch, d, t * d);
  layer_norm_backward<T>(nullptr, x_last, ws.final_mean_.data(), ws.final_rstd_.data(), dz,
                         weights.norm, grads.norm, d_last, ws.xhat_.data());
  hook_backward<Hooks, T>(hooks, HookSite::kFinalNormInput, -1, x_last.view(), d_last.view());

  for (int l = static_cast<int>(depth) - 1; l >= 0; --l) {
    const auto li = static_cast<std::size_t>(l);
    block_backward<T>(pool, c, l, weights.blocks[li], grads.blocks[li], batch,
                      Mat<const T>(ws.residual_[li].data(), m, d),
                      Mat<const T>(ws.blocks_[li].x_mid.data(), m, d), ws.blocks_[li], ws,
                      ws.hooked_probs_, hooks);
  }

  // Class token and position embedding: x0[b, 0] = cls + pos[0], x0[b, 1 + p] = ... + pos[1 + p].
  {
    T* gpos = grads.pos_embed.data();
    T* gcls = grads.cls_token.data();
    parallel(pool, d, 16, 2 * m, [&](Index c0, Index c1) {
      for (Index b = 0; b < batch; ++b)
        for (Index tok = 0; tok < t; ++tok)
          EigenArrayMap<T>(gpos + tok * d + c0, c1 - c0) +=
              EigenArrayMap<const T>(d_resid.row(b * t + tok) + c0, c1 - c0);
      for (Index b = 0; b < batch; ++b)
        EigenArrayMap<T>(gcls + c0, c1 - c0) +=
            EigenArrayMap<const T>(d_resid.row(b * t) + c0, c1 - c0);
    });
  }

  // Patch embedding: out[b, p] = patches[b, p] W^T + bias lands in x0 row b*T + 1 + p.
  const Mat<const T> patches(ws.patches_.data(), batch * np, cpp);
  Mat<T> gw(grads.patch_embed.weight.data(), d, cpp);
  T* gb = grads.patch_embed.bias.data();
  parallel(pool, d, 8, m * cpp, [&](Index c0, Index c1) {
    for (Index b = 0; b < batch; ++b) {
      const Mat<const T> dy =
          Mat<const T>(d_resid).row_range(b * t + 1, b * t + t).col_range(c0, c1);
      gw.row_range(c0, c1).eigen().noalias() +=
          dy.eigen().transpose() * patches.row_range(b * np, b * np + np).eigen();
      EigenArrayMap<T> bias(gb + c0, c1 - c0);
      for (Index p = 0; p < np; ++p) bias += EigenArrayMap<const T>(dy.row(p), c1 - c0);
    }
  });
  if (want_images) {
    Mat<T> dp(ws.d_patches_.data(), batch * np, cpp);
    const Mat<const T> pw(weights.patch_embed.weight.data(), d, cpp);
    parallel(pool, batch * np, 8, d * cpp, [&](Index r0, Index r1) {
      for (Index r = r0; r < r1;) {
        const Index b = r / np, p0 = r % np, p1 = std::min(np, p0 + (r1 - r));
        dp.row_range(r, r + (p1 - p0)).eigen().noalias() =
            Mat<const T>(d_resid).row_range(b * t + 1 + p0, b * t + 1 + p1).eigen() * pw.eigen();
        r += p1 - p0;
      }
    });
    hook_backward<Hooks, T>(hooks, HookSite::kPatchInput, -1, patches.view(), dp.view());
    fold_patches<T>(pool, dp, c.patch_size, grad_images);
  }
}

}  // namespace vitc::model
