"""The zero-shot head: class text embeddings computed once per model, logits = scale x cosine.

Attacks and training reuse the cached class embeddings: the text tower never runs inside a PGD loop.
"""
from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F
from torch import nn

from nbhelpers.models import ClipModel

_CACHE: dict[tuple, torch.Tensor] = {}


def model_fingerprint(module: nn.Module, *, exclude_prefix: str | None = None) -> str:
    """Short sha256 of a module's parameters and buffers (names, shapes, values): identifies weights."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        if exclude_prefix is not None and name.startswith(exclude_prefix):
            continue
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


@torch.no_grad()
def build_class_embeddings(model: ClipModel, classnames: list[str], templates: list[str], *,
                           device: torch.device | str = "cpu", batch_size: int = 256,
                           use_cache: bool = True) -> torch.Tensor:
    """Unit class embeddings (C, D): each class's prompts (one per template) encoded, averaged, renormalised."""
    text_fp = model_fingerprint(model.clip, exclude_prefix="visual.")  # every text-side tensor, projection included
    key = (text_fp, tuple(classnames), tuple(templates)) if use_cache else None
    if key is not None and key in _CACHE:
        return _CACHE[key].to(device)
    was_training = model.training
    model.eval()
    prompts = [t.format(c) for c in classnames for t in templates]
    chunks = [model.encode_text(model.tokenize(prompts[i:i + batch_size], device=device))
              for i in range(0, len(prompts), batch_size)]
    emb = torch.cat(chunks).view(len(classnames), len(templates), -1).mean(1)
    emb = F.normalize(emb, dim=-1).float()
    model.train(was_training)
    if key is not None:
        _CACHE[key] = emb.detach().cpu()
    return emb.to(device)


class ZeroShotClassifier(nn.Module):
    """Image classifier from a CLIP and fixed class embeddings: images in [0, 1] (N, 3, S, S) -> logits (N, C)."""

    def __init__(self, model: ClipModel, class_embeddings: torch.Tensor, *, logit_scale: float | None = None,
                 classnames: list[str] | None = None) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("class_embeddings", F.normalize(class_embeddings.detach().float(), dim=-1))
        self.logit_scale = float(model.logit_scale() if logit_scale is None else logit_scale)
        self.classnames = list(classnames) if classnames is not None else None
        self.train(model.training)  # mirror the wrapped model: a fresh Module would default to train mode

    @classmethod
    def for_task(cls, model: ClipModel, task: str, *, device: torch.device | str = "cpu",
                 logit_scale: float | None = None) -> "ZeroShotClassifier":
        """Head for a mini-world task with its class names and the prompt template."""
        from nbhelpers import world

        names = world.TASKS[task].classnames() if task in world.TASKS else None
        if names is None:
            raise ValueError(f"unknown mini-world task {task!r}; choose one of {sorted(world.TASKS)}")
        emb = build_class_embeddings(model, names, [world.PROMPT_TEMPLATE], device=device)
        return cls(model, emb, logit_scale=logit_scale, classnames=names).to(device)

    @property
    def num_classes(self) -> int:
        """Number of classes C."""
        return self.class_embeddings.shape[0]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (N, C) = logit_scale * cos(image embedding, class embedding)."""
        return self.logit_scale * self.model.encode_image(images) @ self.class_embeddings.T
