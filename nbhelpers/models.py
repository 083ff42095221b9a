"""Models and preprocessing from one call, for both scales.

``create_model_and_transforms(profile)`` returns a :class:`ClipModel` whose image input is a float tensor in
[0, 1] (N, 3, S, S): the CLIP mean/std normalisation is a layer inside the model, as in RobustBench, so attacks
work in pixel space and eps is measured in pixels. The text side is the open_clip tokenizer and text tower.

- ``mini``: the embedded default, an open_clip CLIP built from ``model_configs/mini-clip.json`` (a small
  ModifiedResNet image tower at 32 px) and trained by :mod:`nbhelpers.pretrain` on the procedural mini world.
- ``paper``: any open_clip architecture (default ``ViT-B-32``, 224 px) with OpenAI weights (from the local Hugging
  Face cache), another local checkpoint file, or random weights (``pretrained="none"``, seeded: the same weights in
  every process, so a run cached under "none" is found again).
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
from nbhelpers.utils import file_fingerprint

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
MINI_MODEL_NAME = "mini-clip"
PAPER_MODEL_NAME = "ViT-B-32"
_OPENAI_HF_REPO = "timm/vit_base_patch32_clip_224.openai"
_OPENAI_HF_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
RANDOM_INIT_SEED = 0  # torch seed of every random initialisation (pretrained="none"), independent of global RNG


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


def _resolve_open_clip_weights(model: str, pretrained: str, checkpoint: str, *, allow_download: bool) -> str | None:
    """What open_clip should load for (model, pretrained, checkpoint): a file, a tag, or None (random), failing
    fast with a message that says what to put where when the weights are not on this machine."""
    if checkpoint:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint file {str(path)!r} does not exist; pass an existing {model} "
                                    "weights file (OpenAI's .pt or an open_clip checkpoint).")
        return str(path)
    if pretrained == "none":
        return None
    tag = "openai" if pretrained == "auto" else pretrained
    if model == PAPER_MODEL_NAME and tag == "openai":
        cached = _openai_weights_cached()
        if cached is not None:
            return cached
    if allow_download:
        return tag
    raise FileNotFoundError(
        f"{model} weights {tag!r} are not on this machine and downloads are off (allow_download=False). "
        f"Pass checkpoint='/path/to/{model}.pt' (OpenAI's file or an open_clip checkpoint), or put the weights "
        f"in the Hugging Face cache (for ViT-B-32/openai: repo '{_OPENAI_HF_REPO}', file {_OPENAI_HF_FILES[0]}), "
        "e.g. by running `open_clip.create_model(model, pretrained=tag)` once on a machine with internet; "
        "pretrained='none' gives random weights.")


def build_open_clip(model: str = PAPER_MODEL_NAME, *, pretrained: str = "auto", checkpoint: str = "",
                    allow_download: bool = False) -> ClipModel:
    """An open_clip architecture (OpenAI-style QuickGELU for OpenAI weights) with weights from a file, a
    pretrained tag ('auto' = 'openai'), or random ('none')."""
    if model not in open_clip.list_models():
        raise ValueError(f"unknown open_clip architecture {model!r}; choose one of open_clip.list_models(), "
                         f"e.g. {PAPER_MODEL_NAME}")
    weights = _resolve_open_clip_weights(model, pretrained, checkpoint, allow_download=allow_download)
    quick_gelu = pretrained in ("auto", "openai") or bool(checkpoint)
    if weights is None:  # random init, seeded apart from the global RNG: same weights in every process
        with torch.random.fork_rng(devices=[]), _quiet_open_clip():
            torch.manual_seed(RANDOM_INIT_SEED)
            clip = open_clip.create_model(model, pretrained=None, force_quick_gelu=quick_gelu)
    else:
        clip = open_clip.create_model(model, pretrained=weights, force_quick_gelu=quick_gelu, weights_only=True)
    size = clip.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else int(size)
    return ClipModel(clip, tokenizer=open_clip.get_tokenizer(model), image_size=size, model_name=model)


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


def preprocess_for(model: ClipModel) -> Callable:
    """The preprocess create_model_and_transforms pairs with ``model``: PIL (or tensor, mini) -> float tensor
    (3, S, S) in [0, 1] at the model's input size S."""
    if model.model_name == MINI_MODEL_NAME:
        return mini_preprocess(model.image_size)
    return paper_preprocess(model.image_size)


def load_mini_clip(path: str | os.PathLike) -> ClipModel:
    """Load a mini CLIP from a safetensors checkpoint (safe: tensors only), checking it is a mini CLIP."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    if meta.get("model_name") != MINI_MODEL_NAME:
        raise ValueError(f"{path} is not a {MINI_MODEL_NAME} checkpoint (model_name={meta.get('model_name')!r})")
    if json.loads(meta["config"]) != mini_model_config():
        raise ValueError(f"{path} was trained with another mini-clip config than nbhelpers/model_configs has")
    model = build_mini_clip()
    model.clip.load_state_dict(load_file(str(path)))
    return model.eval()


def create_model_and_transforms(profile: str = "mini", *, model: str = "auto", pretrained: str = "auto",
                                checkpoint: str | os.PathLike | None = "", device: torch.device | str = "cpu",
                                allow_download: bool = False) -> tuple[ClipModel, Callable]:
    """(model in eval mode on device, preprocess) for a profile: one call, as open_clip's.

    mini: the mini CLIP from ``checkpoint`` or the committed ``checkpoints/mini_clip.safetensors``
    (pretrained='none': random init). A missing file is an error naming ``make pretrain``; loading never trains.
    paper: the open_clip architecture ``model`` ('auto' = ViT-B-32) with weights from ``checkpoint``, the
    ``pretrained`` tag ('auto' = 'openai'), or random ('none').
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {sorted(PROFILES)}")
    if profile == "mini":
        if model not in ("auto", MINI_MODEL_NAME):
            raise ValueError(f"the mini profile uses {MINI_MODEL_NAME!r}; got model={model!r}")
        if pretrained == "none" and not checkpoint:
            clip = build_mini_clip()
        else:
            path = Path(checkpoint) if checkpoint else paths.MINI_CHECKPOINT
            if not path.is_file():
                raise FileNotFoundError(f"mini CLIP checkpoint {str(path)!r} not found; make it with `make pretrain` "
                                        "(= python -m nbhelpers.pretrain, about 7 minutes on 2 CPU cores).")
            clip = load_mini_clip(path)
        preprocess = preprocess_for(clip)
    else:
        arch = PAPER_MODEL_NAME if model == "auto" else model
        clip = build_open_clip(arch, pretrained=pretrained, checkpoint=str(checkpoint or ""),
                               allow_download=allow_download)
        preprocess = preprocess_for(clip)
    return clip.to(device).eval(), preprocess


def weights_identity(profile: str, *, model: str = "auto", pretrained: str = "auto",
                     checkpoint: str | os.PathLike | None = "") -> dict[str, str]:
    """What identifies the base weights in a cache key: architecture, tag, and the sha256 of the weights file."""
    arch = (MINI_MODEL_NAME if profile == "mini" else PAPER_MODEL_NAME) if model == "auto" else model
    path: str | None = str(checkpoint) if checkpoint else None
    if path is None and profile == "mini" and pretrained != "none":
        path = str(paths.MINI_CHECKPOINT)
    if path is None and profile == "paper" and pretrained in ("auto", "openai") and arch == PAPER_MODEL_NAME:
        path = _openai_weights_cached()
    return {"profile": profile, "model": arch, "pretrained": pretrained,
            "weights_sha256": file_fingerprint(path) if path and os.path.isfile(path) else "none"}
