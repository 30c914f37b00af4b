// SPDX-License-Identifier: Apache-2.0
#pragma once
// The memory a ViT forward/backward pass works in.
//
// A ViTWorkspace owns every activation buffer. An inference pass (Pass::kInference) needs one set
// of block buffers reused by every block: the residual stream [B*T, D] updated in place, the
// LayerNorm output, the fused qkv [B*T, 2*H*dqk + H*dv], the attention probabilities [B*H, T, T],
// the head outputs and the MLP hidden layer. A training pass (Pass::kTraining) keeps, per block,
// everything backward needs (LayerNorm inputs with their mean and 1/std, GEMM inputs, the
// probabilities, the GELU input), which costs about (16 D + H T) * T floats per image per block
// for a standard block; the backward scratch comes on top.
//
// Buffers grow on demand and are never shrunk: after the first pass at the largest batch size no
// pass allocates. A workspace serves one pass at a time; use one per thread of callers. It may be
// reused across models (buffers are sized per pass), but vit_backward() needs the training-mode
// forward of the same weights and batch immediately before it.

#include <cstdint>
#include <vector>

#include "vitcompress/core/tensor.hpp"
#include "vitcompress/model/vit_config.hpp"

namespace vitc::model {

enum class Pass {
  kInference,  // logits only; nothing kept
  kTraining,   // keeps the activations vit_backward() needs
};

template <class T>
class ViTWorkspace {
 public:
  ViTWorkspace() = default;

  // Batch size and pass of the last forward pass (0 before the first).
  [[nodiscard]] Index batch() const noexcept { return batch_; }
  [[nodiscard]] bool has_activations() const noexcept { return has_activations_; }

  // Bytes currently allocated.
  [[nodiscard]] std::size_t bytes() const noexcept {
    std::size_t n = 0;
    for (const Buffer* b : all_buffers()) n += b->bytes();
    return n;
  }

  // Frees every buffer.
  void release() { *this = ViTWorkspace(); }

  // ---- internals (used by vit_forward / vit_backward; layout may change) ----
  class Buffer {
   public:
    // At least n elements; reallocates (zero-filled) only when n exceeds the capacity.
    T* get(Index n) {
      if (storage_.size() < n) storage_ = Tensor<T, 1>({n});
      return storage_.data();
    }
    [[nodiscard]] T* data() noexcept { return storage_.data(); }
    [[nodiscard]] const T* data() const noexcept { return storage_.data(); }
    [[nodiscard]] std::size_t bytes() const noexcept { return storage_.bytes(); }

   private:
    Tensor<T, 1> storage_;
  };

  struct BlockBuffers {
    Buffer x_mid;  // residual stream after attention (training; aliases x in inference)
    Buffer ln1_mean, ln1_rstd, ln1_out;
    Buffer qkv;
    Buffer probs;         // [B*H, T, T] softmax output
    Buffer probs_hooked;  // what P x V consumed when a hook rewrote the probabilities (training)
    Buffer attn_out;      // [B*T, H*dv]
    Buffer ln2_mean, ln2_rstd, ln2_out;
    Buffer fc1_pre;  // GELU input (training; aliases fc2_in in inference)
    Buffer fc2_in;   // GELU output
  };

  ViTConfig config_;
  Index batch_ = 0;
  bool has_activations_ = false;
  bool hooked_probs_ = false;
  std::vector<Buffer> residual_;      // training: depth + 1 block inputs/outputs; inference: 1
  std::vector<BlockBuffers> blocks_;  // training: one per block; inference: 1 shared
  Buffer patches_;                    // [B*patches, C*P*P]
  Buffer final_mean_, final_rstd_, final_out_;  // final norm of the class tokens [B, D]
  // backward scratch
  Buffer d_resid_, d_ln_out_, d_qkv_, d_attn_out_, d_probs_, d_hidden_, xhat_, d_patches_,
      d_head_in_;

 private:
  std::vector<const Buffer*> all_buffers() const {
    std::vector<const Buffer*> v;
    for (const Buffer& b : residual_) v.push_back(&b);
    for (const BlockBuffers& b : blocks_)
      for (const Buffer* p :
           {&b.x_mid, &b.ln1_mean, &b.ln1_rstd, &b.ln1_out, &b.qkv, &b.probs, &b.probs_hooked,
            &b.attn_out, &b.ln2_mean, &b.ln2_rstd, &b.ln2_out, &b.fc1_pre, &b.fc2_in})
        v.push_back(p);
    for (const Buffer* p :
         {&patches_, &final_mean_, &final_rstd_, &final_out_, &d_resid_, &d_ln_out_, &d_qkv_,
          &d_attn_out_, &d_probs_, &d_hidden_, &xhat_, &d_patches_, &d_head_in_})
      v.push_back(p);
    return v;
  }
};

}  // namespace vitc::model
