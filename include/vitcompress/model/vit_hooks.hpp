// SPDX-License-Identifier: Apache-2.0
#pragma once
// Activation hooks: the seam through which quantization-aware training (and calibration observers)
// see and rewrite the activations of the float ViT.
//
// The forward pass calls `hooks.forward(site, block, x)` on every GEMM input and on the residual
// stream where it enters a LayerNorm. `x` is the live buffer (a 2-D view, rows may be strided):
// the hook may rewrite it in place (fake quantization), and everything downstream consumes the
// rewritten values, including the skip connection for the residual sites, as an integer engine
// would. The backward pass calls `hooks.backward(site, block, x, grad)` with the same (rewritten)
// values and the gradient that reached them; the hook may rewrite `grad` in place (the
// straight-through estimator, masking clipped entries). The gradient left in `grad` continues
// towards the producer of `x` unchanged otherwise (straight through).
//
// Sites (block = -1 outside the transformer blocks):
//   kPatchInput       unfolded patches [B*patches, C*P*P], the patch-embedding GEMM input
//   kBlockInput       residual stream entering norm1 of `block` [B*T, D]
//   kQkvInput         norm1 output, the qkv GEMM input [B*T, D]
//   kQuery, kKey      q and k [B*T, H*dqk] (columns = head-major channels; rows strided)
//   kValue            v [B*T, H*dv]
//   kAttentionProbs   softmax probabilities [B*H*T, T] (rows of head h of image b start at
//                     row (b*H + h)*T). The softmax backward uses the probabilities from before
//                     the hook, as autograd would.
//   kProjInput        concatenated head outputs [B*T, H*dv]
//   kMlpResidual      residual stream entering norm2 [B*T, D]
//   kFc1Input         norm2 output [B*T, D]
//   kFc2Input         GELU output [B*T, hidden]
//   kFinalNormInput   class-token rows of the residual stream entering the final norm [B, D]
//   kHeadInput        final norm output of the class tokens [B, D]
//
// Hooks run on the calling thread, between parallel phases, on whole tensors; they need not be
// thread-safe. The default, NoHooks, has kEnabled = false and costs nothing: every call site is
// behind `if constexpr`.

#include <concepts>
#include <type_traits>

#include "vitcompress/core/tensor.hpp"

namespace vitc::model {

enum class HookSite : int {
  kPatchInput,
  kBlockInput,
  kQkvInput,
  kQuery,
  kKey,
  kValue,
  kAttentionProbs,
  kProjInput,
  kMlpResidual,
  kFc1Input,
  kFc2Input,
  kFinalNormInput,
  kHeadInput,
};

inline constexpr int kNumHookSites = 13;

[[nodiscard]] inline const char* to_string(HookSite site) noexcept {
  switch (site) {
    case HookSite::kPatchInput:
      return "patch_input";
    case HookSite::kBlockInput:
      return "block_input";
    case HookSite::kQkvInput:
      return "qkv_input";
    case HookSite::kQuery:
      return "query";
    case HookSite::kKey:
      return "key";
    case HookSite::kValue:
      return "value";
    case HookSite::kAttentionProbs:
      return "attention_probs";
    case HookSite::kProjInput:
      return "proj_input";
    case HookSite::kMlpResidual:
      return "mlp_residual";
    case HookSite::kFc1Input:
      return "fc1_input";
    case HookSite::kFc2Input:
      return "fc2_input";
    case HookSite::kFinalNormInput:
      return "final_norm_input";
    case HookSite::kHeadInput:
      return "head_input";
  }
  return "unknown";
}

// The identity: no call is ever made.
struct NoHooks {
  static constexpr bool kEnabled = false;
};

// A hook type either declares kEnabled = false, or has kEnabled = true and both member functions.
template <class H, class T>
concept ActivationHooks = requires {
  { std::remove_cvref_t<H>::kEnabled } -> std::convertible_to<bool>;
}
&&(!std::remove_cvref_t<H>::kEnabled ||
   requires(std::remove_cvref_t<H> & h, HookSite site, int block, TensorView<T, 2> x,
            TensorView<const T, 2> cx) {
     h.forward(site, block, x);
     h.backward(site, block, cx, x);
   });

namespace detail {
template <class H, class T>
inline void hook_forward(H& hooks, HookSite site, int block, const TensorView<T, 2>& x) {
  if constexpr (std::remove_cvref_t<H>::kEnabled) hooks.forward(site, block, x);
}
template <class H, class T>
inline void hook_backward(H& hooks, HookSite site, int block, const TensorView<const T, 2>& x,
                          const TensorView<T, 2>& grad) {
  if constexpr (std::remove_cvref_t<H>::kEnabled) hooks.backward(site, block, x, grad);
}
}  // namespace detail

}  // namespace vitc::model
