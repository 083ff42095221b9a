"""Models and preprocessing from one call, for both scales.

``create_model_and_transforms(profile)`` returns a :class:`ClipModel` whose image input is a float tensor in
[0, 1] (N, 3, S, S): the CLIP mean/std normalisation is a layer inside the model, as in RobustBench, so attacks
work in pixel space and eps is measured in pixels. The text side is the open_clip tokenizer and text tower.

- ``mini``: the embedded default, an open_clip CLIP built from ``model_configs/mini-clip.json`` (a small
  ModifiedResNet image tower at 32 px) and trained by :mod:`nbhelpers.pretrain` on the procedural mini world.
- ``paper``: open_clip ``ViT-B-32`` with OpenAI weights (from open_clip's cache, or a local checkpoint file), 224 px.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch
from torch import nn

from nbhelpers import paths

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
MINI_MODEL_NAME = "mini-clip"
PAPER_MODEL_NAME = "ViT-B-32"
_OPENAI_HF_REPO = "timm/vit_base_patch32_clip_224.openai"
_OPENAI_HF_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


@dataclass(frozen=True)
class ProfileSpec:
    """What a profile means: model, input size, default checkpoint and data source."""

    name: str
    model_name: str
    image_size: int
    description: str


PROFILES: dict[str, ProfileSpec] = {
    "mini": ProfileSpec("mini", MINI_MODEL_NAME, 32, "embedded mini world + mini CLIP trained here (CPU, offline)"),
    "paper": ProfileSpec("paper", PAPER_MODEL_NAME, 224, "open_clip ViT-B-32, OpenAI weights, 16 datasets (GPU)"),
}


class ClipModel(nn.Module):
    """An open_clip CLIP with normalisation inside: images in [0, 1] (N, 3, S, S), tokens (N, L) int64."""

    def __init__(self, clip: nn.Module, *, tokenizer: Callable, image_size: int,
                 mean: tuple[float, ...] = OPENAI_MEAN, std: tuple[float, ...] = OPENAI_STD,
                 model_name: str = "") -> None:
        super().__init__()
        self.clip = clip
        self.tokenizer = tokenizer
        self.image_size = image_size
        self.model_name = model_name
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    @property
    def visual(self) -> nn.Module:
        """The image tower (the part adversarial fine-tuning tunes)."""
        return self.clip.visual

    def logit_scale(self) -> float:
        """CLIP's learned temperature as a plain multiplier (exp of the stored log), capped at 100."""
        return float(self.clip.logit_scale.detach().exp().clamp(max=100.0))

    def encode_image(self, images: torch.Tensor, *, normalize: bool = True) -> torch.Tensor:
        """Image embeddings (N, D) from pixels in [0, 1]; unit-norm when normalize."""
        if images.shape[-1] != self.image_size or images.shape[-2] != self.image_size:
            images = nn.functional.interpolate(images, size=(self.image_size, self.image_size),
                                               mode="bilinear", align_corners=False, antialias=False)
        return self.clip.encode_image((images - self.mean) / self.std, normalize=normalize)

    def encode_text(self, tokens: torch.Tensor, *, normalize: bool = True) -> torch.Tensor:
        """Text embeddings (N, D) from token ids (N, L); unit-norm when normalize."""
        return self.clip.encode_text(tokens, normalize=normalize)

    def tokenize(self, texts: list[str], *, device: torch.device | str = "cpu") -> torch.Tensor:
        """Token ids (N, L) for a list of strings, on device."""
        return self.tokenizer(texts).to(device)


@contextlib.contextmanager
def _quiet_open_clip() -> Iterator[None]:
    """Silence open_clip's 'no pretrained weights loaded' warning: random init is intended here."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _register_mini_config() -> None:
    """Make the mini-clip JSON config known to open_clip (idempotent)."""
    if MINI_MODEL_NAME not in open_clip.list_models():
        open_clip.add_model_config(paths.PACKAGE_DIR / "model_configs")


def mini_model_config() -> dict:
    """The mini CLIP's open_clip config (embed_dim, vision_cfg, text_cfg)."""
    return json.loads((paths.PACKAGE_DIR / "model_configs" / f"{MINI_MODEL_NAME}.json").read_text())


def build_mini_clip(*, seed: int = 0) -> ClipModel:
    """A randomly initialised mini CLIP (seeded), with its tokenizer and normalisation layer."""
    _register_mini_config()
    with torch.random.fork_rng(devices=[]), _quiet_open_clip():
        torch.manual_seed(seed)
        clip = open_clip.create_model(MINI_MODEL_NAME, pretrained=None)
    cfg = mini_model_config()
    tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=cfg["text_cfg"]["context_length"])
    return ClipModel(clip, tokenizer=tokenizer, image_size=cfg["vision_cfg"]["image_size"], model_name=MINI_MODEL_NAME)


def _openai_weights_cached() -> str | None:
    """Path of the OpenAI ViT-B-32 weights in the local Hugging Face cache, or None (no network used)."""
    from huggingface_hub import try_to_load_from_cache

    for filename in _OPENAI_HF_FILES:
        hit = try_to_load_from_cache(_OPENAI_HF_REPO, filename)
        if isinstance(hit, str) and os.path.exists(hit):
            return hit
    return None


def _resolve_paper_weights(pretrained: str | None, *, allow_download: bool) -> str | None:
    """Turn 'openai' / a file path / None into what open_clip should load, failing fast when it is missing."""
    if pretrained is None or pretrained == "random":
        return None
    if pretrained == "openai":
        cached = _openai_weights_cached()
        if cached is not None or allow_download:
            return cached or "openai"
        raise FileNotFoundError(
            "ViT-B-32 OpenAI weights are not on this machine and downloads are off (allow_download=False). "
            f"Either pass checkpoint='/path/to/ViT-B-32.pt' (OpenAI's file or an open_clip checkpoint), or "
            f"put the Hugging Face repo '{_OPENAI_HF_REPO}' (file {_OPENAI_HF_FILES[0]}) in the HF cache "
            "(HF_HOME), e.g. by running `open_clip.create_model('ViT-B-32', pretrained='openai')` once on a "
            "machine with internet, or call with allow_download=True where the network allows it.")
    path = Path(pretrained).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {str(path)!r} does not exist; pass an existing ViT-B-32 "
                                "weights file, 'openai' or 'random'.")
    return str(path)


def build_paper_clip(*, pretrained: str | None = "openai", allow_download: bool = False) -> ClipModel:
    """open_clip ViT-B-32 (QuickGELU, as OpenAI's) with weights 'openai', a local file, or None/'random'."""
    weights = _resolve_paper_weights(pretrained, allow_download=allow_download)
    with _quiet_open_clip() if weights is None else contextlib.nullcontext():
        clip = open_clip.create_model(PAPER_MODEL_NAME, pretrained=weights, force_quick_gelu=True,
                                      weights_only=True)
    return ClipModel(clip, tokenizer=open_clip.get_tokenizer(PAPER_MODEL_NAME), image_size=224,
                     model_name=PAPER_MODEL_NAME)


def paper_preprocess(image_size: int = 224) -> Callable:
    """PIL -> float tensor (3, S, S) in [0, 1]: bicubic resize + centre crop, no normalisation (it is in the model)."""
    from torchvision import transforms as T

    return T.Compose([T.Resize(image_size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(image_size),
                      T.Lambda(lambda im: im.convert("RGB")), T.ToTensor()])


def mini_preprocess(image_size: int = 32) -> Callable:
    """PIL or tensor -> float tensor (3, S, S) in [0, 1] at the mini model's size."""
    from torchvision import transforms as T

    return T.Compose([T.Lambda(lambda im: im if isinstance(im, torch.Tensor) else T.functional.to_tensor(
        im.convert("RGB"))), T.Resize((image_size, image_size), antialias=True)])


def create_model_and_transforms(profile: str = "mini", *, checkpoint: str | os.PathLike | None = None,
                                device: torch.device | str = "cpu", allow_download: bool = False,
                                train_if_missing: bool = True) -> tuple[ClipModel, Callable]:
    """(model in eval mode on device, preprocess) for a profile; weights from checkpoint or the profile default.

    mini: checkpoint defaults to the committed ``checkpoints/mini_clip.safetensors``; if it is missing and
    train_if_missing, it is trained (a few minutes on 2 CPU cores). paper: checkpoint is 'openai' (default), a
    file path, or 'random' (random weights, for tests).
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {sorted(PROFILES)}")
    if profile == "mini":
        from nbhelpers import pretrain

        path = Path(checkpoint) if checkpoint else paths.MINI_CHECKPOINT
        if not path.is_file():
            if checkpoint or not train_if_missing:
                raise FileNotFoundError(f"mini CLIP checkpoint {str(path)!r} not found; make it with "
                                        "`python -m nbhelpers.pretrain`.")
            pretrain.pretrain_mini_clip(out=path, device=device)
        model, preprocess = pretrain.load_mini_clip(path), mini_preprocess(PROFILES["mini"].image_size)
    else:
        model = build_paper_clip(pretrained=str(checkpoint) if checkpoint else "openai",
                                 allow_download=allow_download)
        preprocess = paper_preprocess(PROFILES["paper"].image_size)
    return model.to(device).eval(), preprocess
