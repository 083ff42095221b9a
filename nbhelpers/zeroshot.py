"""The zero-shot head: class text embeddings computed once per model, logits = scale x cosine.

Attacks and training reuse the cached class embeddings: the text tower never runs inside a PGD loop.
:func:`build_head` is the one way to make a head from an image tower and class embeddings.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nbhelpers.models import ClipModel
from nbhelpers.utils import fp32_at_least, tensor_fingerprint

# bump with any change to the numbers this module computes (see utils.numerics_versions)
NUMERICS_VERSION = 1

_CACHE: dict[tuple, torch.Tensor] = {}


def model_fingerprint(module: nn.Module, *, exclude_prefix: str | None = None) -> str:
    """Short sha256 of a module's parameters and buffers (names, shapes, values): identifies weights."""
    return tensor_fingerprint({name: t for name, t in module.state_dict().items()
                               if exclude_prefix is None or not name.startswith(exclude_prefix)})


@torch.no_grad()
def build_class_embeddings(model: ClipModel, classnames: list[str], templates: list[str], *,
                           device: torch.device | str = "cpu", batch_size: int = 256,
                           use_cache: bool = True) -> torch.Tensor:
    """Unit class embeddings (C, D): each class's prompts (one per template) encoded, averaged, renormalised."""
    text_fp = model_fingerprint(model.clip, exclude_prefix="visual.")  # every text-side tensor, projection included
    key = (text_fp, str(model.clip.logit_scale.dtype), tuple(classnames), tuple(templates)) if use_cache else None
    if key is not None and key in _CACHE:
        return _CACHE[key].to(device)
    was_training = model.training
    model.eval()
    prompts = [t.format(c) for c in classnames for t in templates]
    chunks = [model.encode_text(model.tokenize(prompts[i:i + batch_size], device=device))
              for i in range(0, len(prompts), batch_size)]
    emb = torch.cat(chunks).view(len(classnames), len(templates), -1).mean(1)
    emb = fp32_at_least(F.normalize(emb, dim=-1))
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
        self.register_buffer("class_embeddings", F.normalize(fp32_at_least(class_embeddings.detach()), dim=-1))
        self.logit_scale = float(model.logit_scale() if logit_scale is None else logit_scale)
        self.classnames = list(classnames) if classnames is not None else None
        self.train(model.training)  # mirror the wrapped model: a fresh Module would default to train mode

    @property
    def num_classes(self) -> int:
        """Number of classes C."""
        return self.class_embeddings.shape[0]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (N, C) = logit_scale * cos(image embedding, class embedding)."""
        return self.logit_scale * self.model.encode_image(images) @ self.class_embeddings.T


def build_head(image_model: ClipModel, class_embeddings: torch.Tensor, *, logit_scale: float | None = None,
               classnames: list[str] | None = None, device: torch.device | str = "cpu") -> ZeroShotClassifier:
    """The zero-shot head, in eval mode on device: images (N, 3, S, S) in [0, 1] -> logits (N, C).

    class_embeddings (C, D) are renormalised; logit_scale defaults to the image model's own. Eval mode applies
    to the wrapped image model too (it is a submodule of the head).
    """
    head = ZeroShotClassifier(image_model, class_embeddings.to(device), logit_scale=logit_scale,
                              classnames=classnames)
    return head.to(device).eval()
