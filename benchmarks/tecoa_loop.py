"""The TeCoA family's PGD attack, evaluation and training step, mirrored for timing (written from reading; not ours).

Mirrored code (TeCoA, Mao et al. ICLR 2023; PMG-AFT copies the attack unchanged):

- cvlab-columbia/ZSRobust4FoundationModel, ``attacks.py`` (commit 1cd9bda), lines 11-53, ``attack_pgd``
  (the same function is also defined in ``finetuning.py``, commit 1243db6, and used by its ``train`` and
  ``validate``): uniform start ``delta.uniform_(-eps, eps)`` then ``clamp(delta, 0 - X, 1 - X)`` (lines 13-15, 24);
  each step preprocesses ``X + delta`` (27), calls ``multiGPU_CLIP(model, images, text_tokens, ...)`` (34), which
  re-encodes every class prompt with the text tower, takes the mean-reduced ``criterion(output, target)`` (36) and
  calls ``loss.backward()`` (38) with every model parameter requiring grad, so weight gradients of both towers
  are computed and accumulate in ``.grad``; then ``d = clamp(d + alpha * sign(g), -eps, eps)`` (44),
  ``d = clamp(d, 0 - x, 1 - x)`` (49), ``delta.data = d`` (50), ``delta.grad.zero_()`` (51).
- same repo, ``models/model.py`` (commit 1cd9bda): ``normalize`` (lines 9-10) and ``clip_img_preprocessing``
  (12-16), a bicubic resize to the model's input size and the CLIP mean/std outside the model; ``multiGPU_CLIP``
  (26-34): ``img_embed, scale_text_embed = clip_model(images, text_tokens, prompt_token)``, logits
  ``img_embed @ scale_text_embed.t()`` (32).
- same repo, ``replace/model.py`` (commit e3d6c63), ``CLIP.forward``: ``encode_image`` and ``encode_text`` on every
  call, both L2-normalised, returns ``(image_features, logit_scale.exp() * text_features)``.
- same repo, ``finetuning.py`` ``train``: ``optimizer.zero_grad()`` *before* the attack (so the attack's weight
  gradients are added to the training gradient), ``clip.tokenize(texts)`` every step, the attack, a forward on
  ``clip_img_preprocessing(images + delta)`` with the text re-encoded, mean cross-entropy, backward, SGD step,
  ``logit_scale`` clamped to ln(100); ``validate``: the attack then a ``no_grad`` forward on the attacked images.
- serendipity1122/Pre-trained-Model-Guided-Fine-Tuning-for-Zero-Shot-Adversarial-Robustness, ``PMG_AFT.py``
  ``train``: the same attack, then further ``multiGPU_CLIP`` calls (pre-trained model on the adversarial images,
  tuned model on the clean ones), each re-encoding the text. Our TIMA-objective step in their style follows it.

Where we are kinder to them than their code (so ratios are conservative): ``validate``'s extra clean forward is
not timed; the teacher forward of the TIMA-style step runs under ``no_grad`` (PMG-AFT keeps the pre-trained
model's graph); the NullPrompter / TokenPrompter (identity here) are left out; on GPU their ``autocast()`` fp16 is
used (``amp=True``), on CPU fp32 (their fp16 autocast is CUDA-only). Images are resized to the model's own size
(224 for ViT-B/32, as theirs; 32 for the mini CLIP) rather than always to 224.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

LN_100 = 4.6052  # their clamp of logit_scale after each step


def preprocess(x: torch.Tensor, *, size: int, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Their clip_img_preprocessing: bicubic resize to (size, size), then (x - mean) / std, outside the model."""
    x = F.interpolate(x, size=(size, size), mode="bicubic")
    return (x - mean) / std


def clip_forward(clip: nn.Module, images: torch.Tensor,
                 text_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Their CLIP.forward, both towers on every call: (unit image features (N, D), logit_scale.exp() x unit text
    features (C, D))."""
    image_features = clip.encode_image(images)
    text_features = clip.encode_text(text_tokens)
    image_features = image_features / image_features.norm(dim=1, keepdim=True)
    text_features = text_features / text_features.norm(dim=1, keepdim=True)
    return image_features, clip.logit_scale.exp() * text_features


def multi_gpu_clip(clip: nn.Module, images: torch.Tensor, text_tokens: torch.Tensor) -> torch.Tensor:
    """Their multiGPU_CLIP: logits per image (N, C) = image features @ scaled text features.T."""
    img_embed, scale_text_embed = clip_forward(clip, images, text_tokens)
    return img_embed @ scale_text_embed.t()


def _autocast(device: torch.device, amp: bool):
    """Their `with autocast():` (CUDA fp16) when amp on a GPU; nothing otherwise."""
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def attack_pgd(clip: nn.Module, X: torch.Tensor, target: torch.Tensor, text_tokens: torch.Tensor, *, alpha: float,
               attack_iters: int, epsilon: float, size: int, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Their attack_pgd (L-inf): perturbation delta (N, 3, S, S), a leaf requiring grad; weight grads left in .grad."""
    delta = torch.zeros_like(X)
    delta.uniform_(-epsilon, epsilon)
    delta = torch.max(torch.min(delta, 1 - X), 0 - X)
    delta.requires_grad = True
    for _ in range(attack_iters):
        images = preprocess(X + delta, size=size, mean=mean, std=std)
        output = multi_gpu_clip(clip, images, text_tokens)
        loss = F.cross_entropy(output, target)  # nn.CrossEntropyLoss(): mean over the batch
        loss.backward()  # every parameter requires grad: both towers' weight gradients are computed
        grad = delta.grad.detach()
        d = torch.clamp(delta + alpha * torch.sign(grad), min=-epsilon, max=epsilon)
        d = torch.max(torch.min(d, 1 - X), 0 - X)
        delta.data[:, :, :, :] = d
        delta.grad.zero_()
    return delta


class TecoaFamily:
    """The peers' loops around one open_clip CLIP (all parameters requiring grad, as after their clip.load)."""

    def __init__(self, clip: nn.Module, tokenize: Callable[[list[str]], torch.Tensor], *, image_size: int,
                 mean: torch.Tensor, std: torch.Tensor, device: torch.device, amp: bool = False) -> None:
        self.clip = clip
        self.tokenize = tokenize
        self.size = image_size
        self.mean, self.std = mean.to(device), std.to(device)
        self.device = device
        self.amp = amp
        for p in clip.parameters():
            p.requires_grad_(True)

    def evaluate(self, images: torch.Tensor, target: torch.Tensor, texts: list[str], *, eps: float, alpha: float,
                 steps: int) -> torch.Tensor:
        """Their validate, per batch: tokenize, attack_pgd, no_grad forward on images + delta; logits (N, C)."""
        self.clip.eval()
        text_tokens = self.tokenize(texts).to(self.device)
        with _autocast(self.device, self.amp):
            delta = attack_pgd(self.clip, images, target, text_tokens, alpha=alpha, attack_iters=steps,
                               epsilon=eps, size=self.size, mean=self.mean, std=self.std)
            with torch.no_grad():
                logits = multi_gpu_clip(self.clip, self._pre(images + delta), text_tokens)
        return logits.float()

    def _pre(self, x: torch.Tensor) -> torch.Tensor:
        return preprocess(x, size=self.size, mean=self.mean, std=self.std)

    def train_step(self, optimizer: torch.optim.Optimizer, images: torch.Tensor, target: torch.Tensor,
                   texts: list[str], *, eps: float, alpha: float, steps: int,
                   objective: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                   teacher: nn.Module | None = None) -> torch.Tensor:
        """Their train, one step; objective(adv_logits, teacher_clean_logits) replaces CE (TIMA-style); the loss."""
        self.clip.visual.train()
        optimizer.zero_grad()  # before the attack: its weight gradients stay and join the training gradient
        text_tokens = self.tokenize(texts).to(self.device)
        with _autocast(self.device, self.amp):
            delta = attack_pgd(self.clip, images, target, text_tokens, alpha=alpha, attack_iters=steps,
                               epsilon=eps, size=self.size, mean=self.mean, std=self.std)
            output = multi_gpu_clip(self.clip, self._pre(images + delta), text_tokens)
            if objective is None:
                loss = F.cross_entropy(output, target)
            else:
                with torch.no_grad():  # kinder than PMG-AFT, whose pre-trained-model forward keeps its graph
                    clean_teacher = multi_gpu_clip(teacher, self._pre(images), text_tokens)
                loss = objective(output.float(), clean_teacher.float())
        loss.backward()
        optimizer.step()
        self.clip.logit_scale.data = torch.clamp(self.clip.logit_scale.data, 0, LN_100)
        return loss.detach()
