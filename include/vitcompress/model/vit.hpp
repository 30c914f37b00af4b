// SPDX-License-Identifier: Apache-2.0
#pragma once
// The float Vision Transformer: everything model/ offers except the training loop (train.hpp).
//
//   vit_config.hpp      ViTConfig, BlockConfig (per-block heads, head dims, MLP sizes), presets
//   vit_weights.hpp     ViTWeights<T> under timm names; random init; parameter iteration
//   vit_checkpoint.hpp  load_vit / save_vit (safetensors), config inference from shapes
//   vit_hooks.hpp       activation hook sites (fake quantization, observers)
//   vit_workspace.hpp   activation buffers; Pass::kInference / kTraining
//   vit_forward.hpp     vit_forward: batched float forward pass
//   loss.hpp            softmax cross-entropy with label smoothing, and its gradient
//   vit_backward.hpp    vit_backward: parameter and input gradients

#include "vitcompress/model/loss.hpp"
#include "vitcompress/model/vit_backward.hpp"
#include "vitcompress/model/vit_checkpoint.hpp"
#include "vitcompress/model/vit_config.hpp"
#include "vitcompress/model/vit_forward.hpp"
#include "vitcompress/model/vit_hooks.hpp"
#include "vitcompress/model/vit_weights.hpp"
#include "vitcompress/model/vit_workspace.hpp"
