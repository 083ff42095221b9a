"""Same-math, faster forward/backward of CLIP image towers for attacks (``pgd_attack(fast=True)``).

Inside :func:`fast_forward` three layer types of a module run an equivalent but cheaper computation; the
parameters, their ``requires_grad`` flags, hooks and the ``state_dict`` are untouched, and everything is restored
when the block exits (also on error). Results agree with the standard forward to float32 rounding (about 1e-6
relative), not bit for bit.

- ``nn.MultiheadAttention`` used as batch-first self-attention (open_clip's ViT blocks): one contiguous
  ``linear`` for q, k, v, ``scaled_dot_product_attention``, one ``linear`` out. The stock module transposes the
  input to (L, N, E) first; with frozen weights and an input that needs a gradient, torch then runs the q/k/v
  projection as L small batched matmuls of N rows each (no folding into one matmul), about 1.3x slower per
  PGD step for ViT-B/32 at batch 8 on CPU.
- ``nn.Conv2d`` with stride == kernel size and no padding (ViT patch embedding): reshape into patches and one
  matmul, whose input gradient is a matmul too (oneDNN's convolution backward is slow for 32x32 kernels).
- other ``nn.Conv2d`` (ResNet towers): weights in channels-last layout, for channels-last inputs (see
  :func:`wants_channels_last`); oneDNN's NHWC kernels are faster on CPU and with cuDNN on tensor cores.
- ``nn.BatchNorm2d`` in eval mode right after a frozen convolution (within an ``nn.Sequential``, or the
  ``convK`` / ``bnK`` pairs of open_clip's ``ModifiedResNet`` and its ``Bottleneck``, whose forwards apply bnK
  to convK's output): folded into the convolution's weight and bias, so it costs nothing forward or backward.

Two GPU-side wrappers of a whole module (the image tower) live here too, since attacks and training share them:
:func:`bf16_outputs` (the module's forward under bf16 autocast, its outputs returned in fp32, so what follows it,
heads and losses, computes and reduces in fp32) and :func:`compiled` (the module's forward through
``torch.compile``). Both set an instance ``forward`` for the block only; parameters and ``state_dict`` keys are
untouched, so checkpoints written inside the block load anywhere.
"""
from __future__ import annotations

import contextlib
import functools
import types
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

# bump with any change to the numbers this module computes (see utils.numerics_versions)
NUMERICS_VERSION = 1


def _is_patch_conv(conv: nn.Conv2d) -> bool:
    """True for a convolution whose windows tile the input without overlap (stride == kernel, no padding)."""
    return (tuple(conv.stride) == tuple(conv.kernel_size) and conv.padding in ((0, 0), "valid")
            and tuple(conv.dilation) == (1, 1) and conv.groups == 1)


def wants_channels_last(module: nn.Module) -> bool:
    """True if module has overlapping convolutions, which run faster on channels-last inputs (N, C, H, W)."""
    return any(isinstance(m, nn.Conv2d) and not _is_patch_conv(m) for m in module.modules())


def _fused_self_attention(self: nn.MultiheadAttention, query: torch.Tensor, key: torch.Tensor,
                          value: torch.Tensor, key_padding_mask: torch.Tensor | None = None,
                          need_weights: bool = True, attn_mask: torch.Tensor | None = None,
                          average_attn_weights: bool = True,
                          is_causal: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Batch-first self-attention (N, L, E) -> ((N, L, E), None); other uses (boolean masks, key padding, weights
    requested, cross-attention) go to the stock forward."""
    simple = (query is key and key is value and query.dim() == 3 and self.batch_first and not need_weights
              and key_padding_mask is None and (attn_mask is None or attn_mask.is_floating_point())
              and self._qkv_same_embed_dim and self.in_proj_weight is not None
              and self.bias_k is None and self.bias_v is None and not self.add_zero_attn
              and (self.dropout == 0.0 or not self.training))
    if not simple:
        return type(self).forward(self, query, key, value, key_padding_mask=key_padding_mask,
                                  need_weights=need_weights, attn_mask=attn_mask,
                                  average_attn_weights=average_attn_weights, is_causal=is_causal)
    n, length, embed = query.shape
    heads = self.num_heads
    qkv = F.linear(query, self.in_proj_weight, self.in_proj_bias)  # (N, L, 3E): one matmul over N*L rows
    q, k, v = qkv.view(n, length, 3, heads, embed // heads).permute(2, 0, 3, 1, 4).unbind(0)  # (N, H, L, E/H)
    if attn_mask is not None and attn_mask.dim() == 3:  # (N*H, L, L) -> (N, H, L, L)
        attn_mask = attn_mask.view(n, heads, length, length)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                         is_causal=is_causal and attn_mask is None)
    out = out.transpose(1, 2).reshape(n, length, embed)
    return F.linear(out, self.out_proj.weight, self.out_proj.bias), None


def _patch_conv(self: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """Non-overlapping convolution (N, C, H, W) -> (N, O, H/k, W/k) as one matmul over the patches."""
    kh, kw = self.kernel_size
    n, c, h, w = x.shape
    if h % kh or w % kw:
        return type(self).forward(self, x)
    gh, gw = h // kh, w // kw
    patches = x.reshape(n, c, gh, kh, gw, kw).permute(0, 2, 4, 1, 3, 5).reshape(n, gh * gw, c * kh * kw)
    out = F.linear(patches, self.weight.reshape(self.out_channels, -1), self.bias)
    return out.view(n, gh, gw, self.out_channels).permute(0, 3, 1, 2)


def _channels_last_conv(weight: torch.Tensor | None, bias: torch.Tensor | None = None):
    """Forward of a convolution with its weight in channels-last layout (a frozen copy, or converted per call)."""

    def forward(self: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
        w = weight if weight is not None else self.weight.contiguous(memory_format=torch.channels_last)
        return self._conv_forward(x, w, bias if weight is not None else self.bias)

    return forward


def _identity(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Forward of a BatchNorm folded into the preceding convolution."""
    return x


_CONV_BN_PARENTS = ("open_clip.modified_resnet.ModifiedResNet", "open_clip.modified_resnet.Bottleneck")


def _conv_bn_pairs(module: nn.Module) -> dict[nn.Conv2d, nn.BatchNorm2d]:
    """Frozen convolution -> eval-mode BatchNorm2d applied directly to its output (foldable pairs)."""
    pairs: dict[nn.Conv2d, nn.BatchNorm2d] = {}
    for parent in module.modules():
        kind = f"{type(parent).__module__}.{type(parent).__qualname__}"
        if isinstance(parent, nn.Sequential):
            kids = list(parent.children())
            candidates = list(zip(kids, kids[1:]))
        elif kind in _CONV_BN_PARENTS:
            candidates = [(getattr(parent, f"conv{i}", None), getattr(parent, f"bn{i}", None)) for i in (1, 2, 3)]
        else:
            continue
        for conv, bn in candidates:
            if (type(conv) is nn.Conv2d and type(bn) is nn.BatchNorm2d and not bn.training
                    and bn.running_mean is not None and conv.padding_mode == "zeros"
                    and not any(p.requires_grad for p in (*conv.parameters(), *bn.parameters()))):
                pairs[conv] = bn
    return pairs


def _folded(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) of conv followed by eval-mode bn as one convolution; weight channels-last."""
    scale = (bn.running_var + bn.eps).rsqrt()
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    if conv.bias is not None:
        shift = shift + conv.bias * scale
    weight = (conv.weight * scale.view(-1, 1, 1, 1)).contiguous(memory_format=torch.channels_last)
    return weight.detach(), shift.detach()


@contextlib.contextmanager
def fast_forward(module: nn.Module) -> Iterator[nn.Module]:
    """Within the block, module's self-attention, patch-embedding and convolution layers run the faster equivalents.

    Frozen convolution weights (requires_grad=False) are copied to channels-last (and BatchNorm-folded) once on
    entry; trainable ones are converted inside each call, so their gradients still flow, and are not folded.
    Instance-level forwards are removed on exit.
    """
    patched: list[nn.Module] = []
    try:
        pairs = {conv: bn for conv, bn in _conv_bn_pairs(module).items()
                 if "forward" not in conv.__dict__ and "forward" not in bn.__dict__}
        folded_bns = set(pairs.values())
        for m in module.modules():
            if "forward" in m.__dict__:  # already overridden (nested use, or by the user): leave it alone
                continue
            if isinstance(m, nn.MultiheadAttention):
                m.forward = types.MethodType(_fused_self_attention, m)
            elif m in folded_bns:
                m.forward = types.MethodType(_identity, m)
            elif m in pairs:
                with torch.no_grad():
                    m.forward = types.MethodType(_channels_last_conv(*_folded(m, pairs[m])), m)
            elif isinstance(m, nn.Conv2d) and m.padding_mode == "zeros":
                if _is_patch_conv(m):
                    m.forward = types.MethodType(_patch_conv, m)
                else:
                    frozen_copy = (None if m.weight.requires_grad
                                   else m.weight.detach().contiguous(memory_format=torch.channels_last))
                    m.forward = types.MethodType(_channels_last_conv(frozen_copy), m)
            else:
                continue
            patched.append(m)
        yield module
    finally:
        for m in patched:
            m.__dict__.pop("forward", None)


def _to_fp32(out: object) -> object:
    """Floating tensors of a forward's output (a tensor, or a tuple / list / dict of them) as fp32."""
    if isinstance(out, torch.Tensor):
        return out.float() if out.is_floating_point() else out
    if isinstance(out, (tuple, list)):
        return type(out)(_to_fp32(o) for o in out)
    if isinstance(out, dict):
        return {k: _to_fp32(v) for k, v in out.items()}
    return out


def _device_type(module: nn.Module, args: tuple) -> str:
    """Device type of the first tensor argument (else of the module's first parameter, else 'cpu')."""
    for a in args:
        if isinstance(a, torch.Tensor):
            return a.device.type
    p = next(module.parameters(), None)
    return p.device.type if p is not None else "cpu"


def _bf16_forward(module: nn.Module, inner: Callable) -> Callable:
    """inner(*args) under bf16 autocast on its input's device, floating outputs cast to fp32."""

    @functools.wraps(inner)
    def forward(*args: object, **kwargs: object) -> object:
        with torch.autocast(_device_type(module, args), dtype=torch.bfloat16):
            out = inner(*args, **kwargs)
        return _to_fp32(out)

    return forward


@contextlib.contextmanager
def _instance_forwards(modules: tuple[nn.Module, ...], wrap: Callable[[nn.Module, Callable], Callable]
                       ) -> Iterator[None]:
    """Within the block each module's forward is wrap(module, its current forward); the previous instance forward
    (if any) is put back on exit, also on error."""
    saved: list[tuple[nn.Module, object]] = []
    try:
        for m in dict.fromkeys(modules):  # each module once
            saved.append((m, m.__dict__.get("forward")))
            m.forward = wrap(m, m.forward)
        yield
    finally:
        for m, previous in reversed(saved):
            if previous is None:
                m.__dict__.pop("forward", None)
            else:
                m.forward = previous


@contextlib.contextmanager
def bf16_outputs(*modules: nn.Module, enabled: bool = True) -> Iterator[None]:
    """Within the block each module runs its forward under bf16 autocast and returns fp32 outputs (amp: bf16
    matmuls inside the module, everything after it in fp32). enabled=False changes nothing."""
    if not enabled:
        yield
        return
    with _instance_forwards(modules, _bf16_forward):
        yield


def compile_available(device_type: str = "cpu") -> tuple[bool, str]:
    """(whether torch.compile's default backend, inductor, can build kernels here, why not): on CPU it needs a C++
    compiler, on CUDA Triton."""
    import shutil

    if not hasattr(torch, "compile"):
        return False, f"torch {torch.__version__} has no torch.compile"
    if device_type == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError:
            return False, "inductor needs Triton on CUDA, which is not installed"
        return True, ""
    if not any(shutil.which(c) for c in ("c++", "g++", "clang++")):
        return False, "inductor needs a C++ compiler on CPU (c++, g++ or clang++), none on PATH"
    return True, ""


@contextlib.contextmanager
def compiled(*modules: nn.Module, enabled: bool = True, **compile_options: object) -> Iterator[None]:
    """Within the block each module's forward runs through ``torch.compile(forward, **compile_options)`` (same math,
    float rounding of the fused kernels; the first calls compile, a new input shape or grad mode may recompile).
    The compiled forward is dropped on exit. enabled=False changes nothing."""
    if not enabled:
        yield
        return
    with _instance_forwards(modules, lambda m, fwd: torch.compile(fwd, **compile_options)):
        yield
