#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Writes tests/data/reference/vit_small.safetensors: a PyTorch reference for the float ViT.

The model is timm's VisionTransformer / DeiT architecture written out for torch 1.13 (no timm
needed): Conv2d patch embedding, class token, position embedding, pre-norm blocks with a fused qkv
Linear reshaped (B, N, 3, H, hd) and permuted, softmax attention scaled by hd^-0.5, exact-erf GELU
MLP, LayerNorm eps 1e-6, final norm, head on token 0. Parameter names are timm's.

The file holds, with the parameters under their timm names (F32):
  input [3, 1, 28, 28] F32, labels [3] I64,
  logits [3, 10] F32                     the forward pass,
  grad.<name> (every parameter) F32      gradients of the mean cross-entropy,
  grad.input F32                         its gradient with respect to the input,
and __metadata__ {"num_heads": "2", "torch_version": ...}. It has no "vitc.config", so loading it
also exercises config inference from shapes. The reference outputs are computed in float64 from the
float32 parameters, so they are exact to float32 rounding.

Deterministic (torch.manual_seed). Regenerate with:  tests/reference/make_vit_reference.py
Needs Debian's python3-torch; the C++ tests only read the committed output.
"""
import json
import math
import os
import struct
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F


class PatchEmbed(nn.Module):
    def __init__(self, img_size, patch_size, in_chans, embed_dim):
        super().__init__()
        self.num_patches = (img_size // patch_size) ** 2
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)  # B, N, D


class Attention(nn.Module):
    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        attn = attn.softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj(x)


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()  # approximate='none': the exact erf form
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, num_heads, mlp_hidden):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, mlp_hidden)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    def __init__(self, img_size, patch_size, in_chans, num_classes, embed_dim, depth, num_heads,
                 mlp_hidden):
        super().__init__()
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        n = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, embed_dim))
        self.blocks = nn.Sequential(*[Block(embed_dim, num_heads, mlp_hidden) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, num_classes)

    def forward(self, x):
        x = self.patch_embed(x)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


def randomize(model):
    """Non-trivial values everywhere, so that no term of the gradient is negligible."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm1.weight") or name.endswith("norm2.weight") or name == "norm.weight":
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
            elif name in ("cls_token", "pos_embed"):
                p.copy_(0.5 * torch.randn_like(p))
            elif name == "patch_embed.proj.weight":
                p.copy_(torch.randn_like(p) / math.sqrt(p[0].numel()))
            else:
                p.copy_(0.25 * torch.randn_like(p))


_DTYPES = {torch.float32: "F32", torch.int64: "I64"}


def write_safetensors(path, tensors, metadata):
    """The safetensors format: u64 LE header size, JSON header padded with spaces to 8 bytes, data."""
    header, blobs, offset = {"__metadata__": metadata}, [], 0
    for name, t in tensors.items():
        data = t.detach().contiguous().cpu().numpy().tobytes()  # little-endian on x86/arm
        header[name] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def main():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = VisionTransformer(img_size=28, patch_size=7, in_chans=1, num_classes=10, embed_dim=32,
                              depth=2, num_heads=2, mlp_hidden=64)
    randomize(model)
    x = torch.randn(3, 1, 28, 28)
    labels = torch.tensor([3, 7, 0], dtype=torch.int64)

    params32 = {k: v.detach().clone() for k, v in model.state_dict().items()}
    ref = model.double()
    xd = x.double().requires_grad_(True)
    logits = ref(xd)
    loss = F.cross_entropy(logits, labels)
    loss.backward()

    tensors = dict(params32)
    tensors["input"] = x
    tensors["labels"] = labels
    tensors["logits"] = logits.detach().float()
    for name, p in ref.named_parameters():
        tensors["grad." + name] = p.grad.float()
    tensors["grad.input"] = xd.grad.float()

    out = sys.argv[1] if len(sys.argv) > 1 else os.path.normpath(os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "data", "reference", "vit_small.safetensors"))
    write_safetensors(out, tensors, {"num_heads": "2", "loss": repr(loss.item()),
                                     "torch_version": torch.__version__,
                                     "generator": "tests/reference/make_vit_reference.py"})
    print(f"wrote {out}: {len(tensors)} tensors, loss {loss.item():.6f}")


if __name__ == "__main__":
    main()
