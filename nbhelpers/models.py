"""Models and preprocessing from one call, for both scales.

``create_model_and_transforms(profile)`` returns a :class:`ClipModel` whose image input is a float tensor in
[0, 1] (N, 3, H, W): the CLIP mean/std normalisation is a layer inside the model, as in RobustBench, so attacks
work in pixel space and eps is measured in pixels. An input of another size than the model's is resized inside
the model, before the normalisation (``ClipModel.resize_mode``). The text side is the open_clip tokenizer and
text tower.

- ``mini``: the embedded default, an open_clip CLIP built from ``model_configs/mini-clip.json`` (a small
  ModifiedResNet image tower at 32 px) and trained by :mod:`nbhelpers.pretrain` on the procedural mini world.
- ``paper``: any open_clip architecture (default ``ViT-B-32``, 224 px) with OpenAI weights (from the local Hugging
  Face cache), a local weights file of any format the peers release (:mod:`nbhelpers.checkpoints`: OpenAI's
  TorchScript ``.pt``, TeCoA-family ``.pth.tar``, image-tower state dicts, AGFT, open_clip, safetensors), or
  random weights (``pretrained="none"``, seeded: the same weights in every process, so a run cached under
  "none" is found again). A file holding only the image tower replaces the image tower of the model that
  ``pretrained`` names. Every paper model carries a :class:`~nbhelpers.checkpoints.LoadReport` (``load_report``).

Evaluation protocols (:data:`PROTOCOLS`) say how a dataset's PIL images become tensors and how the model resizes
them (:func:`preprocess_for_protocol`); the paper profile's default is ``"tecoa"``, the peers' own.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch
from PIL import Image
from torch import nn

from nbhelpers import paper_data, paths
from nbhelpers.checkpoints import (OPENAI_SHA256, Checkpoint, CheckpointError, LoadReport, check_fits, detect_tower,
                                   load_safetensors_file, read_checkpoint)
from nbhelpers.utils import file_fingerprint

# bump with any change to the numbers this module computes: the models' forward passes, normalisation, preprocessing
# and weight loading (see utils.numerics_versions)
NUMERICS_VERSION = 1

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's ImageNet statistics (PMG-AFT's PMG_AFT.py lines 119-120)
IMAGENET_STD = (0.229, 0.224, 0.225)
INPUT_NORMS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "clip": (OPENAI_MEAN, OPENAI_STD), "imagenet": (IMAGENET_MEAN, IMAGENET_STD)}
MINI_MODEL_NAME = "mini-clip"
PAPER_MODEL_NAME = "ViT-B-32"
_OPENAI_HF_REPO = "timm/vit_base_patch32_clip_224.openai"
_OPENAI_HF_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
RANDOM_INIT_SEED = 0  # torch seed of every random initialisation (pretrained="none"), independent of global RNG
RESIZE_MODES = ("bilinear", "bicubic")

PROTOCOLS = paper_data.PROTOCOLS  # the names and what each means live with the datasets they read
NATIVE_RESOLUTION = paper_data.NATIVE_RESOLUTION
IN_MODEL_RESIZE: dict[str, str] = {name: p.resize for name, p in paper_data.PROTOCOL_RECORDS.items()}


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
    """An open_clip CLIP with resize and normalisation inside: images in [0, 1] (N, 3, H, W), tokens (N, L) int64."""

    def __init__(self, clip: nn.Module, *, tokenizer: Callable, image_size: int,
                 mean: tuple[float, ...] = OPENAI_MEAN, std: tuple[float, ...] = OPENAI_STD,
                 model_name: str = "", resize_mode: str = "bilinear", protocol: str = "mini",
                 load_report: LoadReport | None = None) -> None:
        super().__init__()
        if resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode {resize_mode!r} is not one of {RESIZE_MODES}")
        self.clip = clip
        self.tokenizer = tokenizer
        self.image_size = image_size
        self.model_name = model_name
        self.resize_mode = resize_mode
        self.protocol = protocol
        self.load_report = load_report
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
        """Image embeddings (N, D) from pixels in [0, 1], resized to the model's input (resize_mode, as
        F.interpolate without antialiasing: TeCoA's clip_img_preprocessing for 'bicubic'); unit-norm when normalize."""
        return self.clip.encode_image(self.model_inputs(images), normalize=normalize)

    def model_inputs(self, images: torch.Tensor) -> torch.Tensor:
        """What the image tower reads: pixels in [0, 1] (N, 3, H, W) resized to the model's input (resize_mode, only
        when the size differs) and normalised with the model's mean/std -> (N, 3, S, S)."""
        if images.shape[-1] != self.image_size or images.shape[-2] != self.image_size:
            images = nn.functional.interpolate(images, size=(self.image_size, self.image_size),
                                               mode=self.resize_mode, align_corners=False, antialias=False)
        return (images - self.mean) / self.std

    def encode_text(self, tokens: torch.Tensor, *, normalize: bool = True) -> torch.Tensor:
        """Text embeddings (N, D) from token ids (N, L); unit-norm when normalize."""
        return self.clip.encode_text(tokens, normalize=normalize)

    def tokenize(self, texts: list[str], *, device: torch.device | str = "cpu") -> torch.Tensor:
        """Token ids (N, L) for a list of strings, on device."""
        return self.tokenizer(texts).to(device)


def set_input_norm(model: ClipModel, norm: str) -> ClipModel:
    """Normalise model's inputs with `norm`'s mean/std (INPUT_NORMS: "clip", CLIP's; "imagenet", torchvision's),
    in place; returns the model."""
    if norm not in INPUT_NORMS:
        raise ValueError(f"unknown input normalisation {norm!r}; choose one of {sorted(INPUT_NORMS)}")
    mean, std = INPUT_NORMS[norm]
    model.mean.copy_(torch.tensor(mean).view(1, 3, 1, 1))
    model.std.copy_(torch.tensor(std).view(1, 3, 1, 1))
    return model


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


def _looks_like_path(pretrained: str) -> bool:
    """True if `pretrained` names a file rather than an open_clip tag."""
    return os.sep in pretrained or pretrained.lower().endswith((".pt", ".pth", ".tar", ".bin", ".safetensors"))


def _resolve_open_clip_weights(model: str, pretrained: str, *, allow_download: bool) -> str | None:
    """What the base model's weights are for (model, pretrained): a file, a tag, or None (random), failing fast
    with a message that says what to put where when the weights are not on this machine."""
    if pretrained == "none":
        return None
    local = os.path.expanduser(pretrained)
    if pretrained not in ("auto", "openai") and (os.path.isfile(local) or _looks_like_path(pretrained)):
        if os.path.exists(local):  # a local file (read and checked by read_checkpoint)
            return local
        raise FileNotFoundError(f"pretrained file {pretrained!r} does not exist; pass an existing full {model} weights "
                                "file (e.g. OpenAI's ViT-B-32.pt), a pretrained tag such as 'openai', or 'none'.")
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


def expected_state_shapes(model: str) -> dict[str, torch.Size]:
    """Every state-dict key of open_clip architecture `model` with its shape, from a build on the meta device
    (no memory, no initialisation: milliseconds), to check a file before any model is built."""
    with torch.device("meta"), _quiet_open_clip():
        clip = open_clip.create_model(model, pretrained=None, device="meta")
    return {k: v.shape for k, v in clip.state_dict().items()}


def _read_fitting(path: str, model: str, expected: dict[str, torch.Size], *, role: str) -> Checkpoint:
    """Read a weights file and check that it fits `model` exactly (keys and shapes of its tower)."""
    ckpt = read_checkpoint(path, role=role)
    if ckpt.tower == "image":
        tower = {k[len("visual."):]: v for k, v in expected.items() if k.startswith("visual.")}
        check_fits(ckpt, tower, model=model, role=role)
    else:
        check_fits(ckpt, expected, model=model, role=role)
    return ckpt


def _report_entry(role: str, ckpt: Checkpoint) -> dict[str, str]:
    """One file's row of the load report: role, path, format, container, tower, sha256 and the file's info."""
    return {"role": role, "path": ckpt.path, "format": ckpt.format, "container": ckpt.container,
            "tower": ckpt.tower, "sha256": ckpt.sha256, **{f"info.{k}": v for k, v in ckpt.info.items()}}


def build_open_clip(model: str = PAPER_MODEL_NAME, *, pretrained: str = "auto", checkpoint: str = "",
                    allow_download: bool = False, protocol: str = paper_data.DEFAULT_PROTOCOL,
                    quick_gelu: bool | None = None) -> ClipModel:
    """An open_clip architecture with weights from a file of any recognised format (``checkpoint``), on top of
    the model ``pretrained`` names ('auto' = 'openai', a tag, a full weights file, or 'none' = random) where the
    file holds the image tower only. Loading is strict and every file is checked before the model is built.
    QuickGELU (``quick_gelu=None``) where the weights are OpenAI's or OpenAI-derived: the 'openai' tag and every
    weights file (the peers fine-tune OpenAI's CLIP; pass quick_gelu=False for a GELU-trained file)."""
    if model not in open_clip.list_models():
        raise ValueError(f"unknown open_clip architecture {model!r}; choose one of open_clip.list_models(), "
                         f"e.g. {PAPER_MODEL_NAME}")
    resize_mode = in_model_resize(protocol)
    if protocol == "mini":
        raise ValueError("protocol 'mini' belongs to the mini profile; choose one of "
                         f"{[p for p in PROTOCOLS if p != 'mini']}")
    expected = expected_state_shapes(model)
    ckpt = None
    if checkpoint:
        ckpt = _read_fitting(checkpoint, model, expected, role="checkpoint")
    base_file, tag, notes = None, None, []
    if ckpt is None or ckpt.tower == "image":
        base = _resolve_open_clip_weights(model, pretrained, allow_download=allow_download)
        if base is not None and os.path.exists(base):
            base_file = _read_fitting(base, model, expected, role="pretrained")
            if base_file.tower != "full":
                raise CheckpointError(f"pretrained {base!r} holds only an image tower ({base_file.format}); the base "
                                      "model must be full weights. Fix: pass it as checkpoint=, with pretrained= a "
                                      f"full {model} file, 'openai' or 'none'.")
        else:
            tag = base
        if ckpt is not None and base is None:
            warnings.warn(f"{ckpt.path} holds only the image tower and pretrained='none': the text tower of this "
                          f"{model} is random (seed {RANDOM_INIT_SEED}); its zero-shot numbers mean nothing. Pass "
                          "pretrained='openai' (or a full weights file) for the text tower the file was trained with.",
                          stacklevel=2)
            notes.append("text tower random (pretrained='none')")
    qg = quick_gelu if quick_gelu is not None else (ckpt is not None or base_file is not None or tag == "openai")
    with torch.random.fork_rng(devices=[]), _quiet_open_clip():  # seeded apart from the global RNG
        torch.manual_seed(RANDOM_INIT_SEED)
        if tag is None:
            clip = open_clip.create_model(model, pretrained=None, force_quick_gelu=qg)
        else:
            clip = open_clip.create_model(model, pretrained=tag, force_quick_gelu=qg, weights_only=True)
    files = []
    if base_file is not None:
        clip.load_state_dict(base_file.state_dict, strict=True)
        files.append(_report_entry("pretrained", base_file))
    if ckpt is not None:
        (clip.visual if ckpt.tower == "image" else clip).load_state_dict(ckpt.state_dict, strict=True)
        files.append(_report_entry("checkpoint", ckpt))
    for f in (base_file, ckpt):
        if f is not None and f.format == "openai_torchscript" and model in OPENAI_SHA256:
            same = f.sha256 == OPENAI_SHA256[model]
            notes.append(f"{f.path}: sha256 {'equals' if same else 'differs from'} OpenAI's published {model}.pt")
    base_source = (f"pretrained file {base_file.path} ({base_file.format})" if base_file is not None
                   else f"pretrained tag {tag!r} via open_clip" if tag is not None
                   else f"random init (seed {RANDOM_INIT_SEED})")
    towers = {"image": base_source, "text": base_source}
    if ckpt is not None:
        towers["image"] = f"checkpoint {ckpt.path} ({ckpt.format})"
        if ckpt.tower == "full":
            towers["text"] = towers["image"]
    report = LoadReport(model, towers, tuple(files), qg, tuple(notes))
    size = clip.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else int(size)
    mean, std = INPUT_NORMS[paper_data.PROTOCOL_RECORDS[protocol].normalisation]  # pmg_aft: ImageNet's
    return ClipModel(clip, tokenizer=open_clip.get_tokenizer(model), image_size=size, model_name=model, mean=mean,
                     std=std, resize_mode=resize_mode, protocol=protocol, load_report=report)


def _convert_rgb(image: Image.Image) -> Image.Image:
    """PIL image in RGB (PMG-AFT's to_rgb; a copy for RGB input, values unchanged)."""
    return image.convert("RGB")


def in_model_resize(protocol: str) -> str:
    """The interpolation ClipModel uses to bring an input of another size to its own under `protocol`."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {sorted(PROTOCOLS)}: "
                         + "; ".join(f"{k}: {v}" for k, v in PROTOCOLS.items()))
    return IN_MODEL_RESIZE[protocol]


def open_clip_eval_transform(image_size: int = 224) -> Callable:
    """open_clip's own evaluation transform (PIL -> [0, 1] tensor) without its final Normalize (ours is in the
    model)."""
    from torchvision import transforms as T

    full = open_clip.image_transform(image_size, is_train=False, mean=OPENAI_MEAN, std=OPENAI_STD)
    steps = list(full.transforms)
    if not steps or not isinstance(steps[-1], T.Normalize):
        raise RuntimeError(f"open_clip.image_transform no longer ends with Normalize ({steps}); update "
                           "models.open_clip_eval_transform")
    return T.Compose(steps[:-1])


def preprocess_for_protocol(protocol: str, dataset: str | None = None, *, image_size: int = 224) -> Callable:
    """PIL -> float tensor (3, H, W) in [0, 1] for one dataset under an evaluation protocol (see PROTOCOLS):
    native-resolution datasets (NATIVE_RESOLUTION) keep their size under 'tecoa'; dataset=None gives the
    transform of every other dataset (and of the fine-tuning set)."""
    from torchvision import transforms as T

    in_model_resize(protocol)
    if protocol == "mini":
        return mini_preprocess(image_size)
    if dataset is not None and dataset not in paper_data.PAPER_DATASETS:
        raise ValueError(f"unknown dataset {dataset!r} for protocol {protocol!r}; choose one of "
                         f"{list(paper_data.PAPER_DATASETS)} (or None for the generic transform)")
    if paper_data.PROTOCOL_RECORDS[protocol].pixels == "open_clip":
        return open_clip_eval_transform(image_size)
    rgb = T.Lambda(_convert_rgb)
    if dataset in NATIVE_RESOLUTION:
        if paper_data.PROTOCOL_RECORDS[protocol].pixels == "native_small":  # TeCoA finetuning.py `preprocess` =
            # ToTensor() for cifar10/100 and STL10 (PMG-AFT's PMG_AFT.py line 245 too)
            return T.Compose([rgb, T.ToTensor()])
        return T.Compose([rgb, T.Resize((image_size, image_size)), T.ToTensor()])  # TGA-ZSR utils.py `preprocess`
    # TeCoA `preprocess224` / PMG-AFT (with to_rgb): Resize(256) (bilinear, torchvision's default) + CenterCrop(224)
    return T.Compose([rgb, T.Resize(round(image_size * 256 / 224)), T.CenterCrop(image_size), T.ToTensor()])


def paper_preprocess(image_size: int = 224) -> Callable:
    """PIL -> float tensor (3, S, S) in [0, 1]: the paper profile's default preprocess, i.e. the 'tecoa' protocol's
    transform of every dataset without a native resolution (Resize(256) + CenterCrop(224)); no normalisation (it is
    in the model). Per dataset: :func:`preprocess_for_protocol`."""
    return preprocess_for_protocol(paper_data.DEFAULT_PROTOCOL, None, image_size=image_size)


def mini_preprocess(image_size: int = 32) -> Callable:
    """PIL or tensor -> float tensor (3, S, S) in [0, 1] at the mini model's size."""
    from torchvision import transforms as T

    return T.Compose([T.Lambda(lambda im: im if isinstance(im, torch.Tensor) else T.functional.to_tensor(
        im.convert("RGB"))), T.Resize((image_size, image_size), antialias=True)])


class ProtocolPreprocess:
    """The preprocess of an evaluation protocol: called on a PIL image, the generic transform (datasets without a
    native resolution, the fine-tuning set); ``for_dataset(name)`` gives a dataset's own transform, which
    data.load_eval_set uses, so the model's one preprocess carries the whole protocol (see PROTOCOLS)."""

    def __init__(self, protocol: str, *, image_size: int = 224) -> None:
        in_model_resize(protocol)
        self.protocol = protocol
        self.image_size = image_size
        self._generic = preprocess_for_protocol(protocol, None, image_size=image_size)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """PIL -> float tensor (3, S, S) in [0, 1] by the protocol's generic transform."""
        return self._generic(image)

    def for_dataset(self, dataset: str) -> Callable:
        """PIL -> float tensor (3, H, W) in [0, 1] for one paper dataset under this protocol."""
        return preprocess_for_protocol(self.protocol, dataset, image_size=self.image_size)

    def __repr__(self) -> str:
        return f"ProtocolPreprocess({self.protocol!r}, image_size={self.image_size})"


def preprocess_for(model: ClipModel) -> Callable:
    """The preprocess create_model_and_transforms pairs with ``model``: PIL (or tensor, mini) -> float tensor
    (3, S, S) in [0, 1] at the model's input size S (paper: a ProtocolPreprocess of the model's protocol)."""
    if model.model_name == MINI_MODEL_NAME:
        return mini_preprocess(model.image_size)
    return ProtocolPreprocess(model.protocol, image_size=model.image_size)


def load_mini_clip(path: str | os.PathLike) -> ClipModel:
    """Load a mini CLIP from a safetensors checkpoint (safe: tensors only), checking it is a mini CLIP; a bad file
    (missing, a folder, empty, truncated, not safetensors, another model) is an error naming it and the fix."""
    role = "mini CLIP checkpoint"
    fix = ("Fix: pass the safetensors file `make pretrain` writes (checkpoints/mini_clip.safetensors), or leave "
           "checkpoint empty for the committed one.")
    try:
        state, meta = load_safetensors_file(path, role=role)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{role} {str(path)!r} does not exist. {fix}") from exc
    except CheckpointError as exc:  # the reader's problem, with the mini profile's fix instead of the generic one
        problem = str(exc).split(" Fix: ")[0].rstrip(".")
        raise CheckpointError(f"{role} {str(path)!r}: {problem}. {fix}") from exc
    if meta.get("model_name") != MINI_MODEL_NAME:
        raise CheckpointError(f"{role} {str(path)!r} is not a {MINI_MODEL_NAME} checkpoint (model_name="
                              f"{meta.get('model_name')!r}). {fix}")
    if json.loads(meta["config"]) != mini_model_config():
        raise CheckpointError(f"{role} {str(path)!r} was trained with another mini-clip config than "
                              "nbhelpers/model_configs has. Fix: rebuild it with `make pretrain`.")
    model = build_mini_clip()
    model.clip.load_state_dict(state)
    return model.eval()


def create_model_and_transforms(profile: str = "mini", *, model: str = "auto", pretrained: str = "auto",
                                checkpoint: str | os.PathLike | None = "", device: torch.device | str = "cpu",
                                allow_download: bool = False, protocol: str = "auto") -> tuple[ClipModel, Callable]:
    """(model in eval mode on device, preprocess) for a profile: one call, as open_clip's.

    mini: the mini CLIP from ``checkpoint`` or the committed ``checkpoints/mini_clip.safetensors``
    (pretrained='none': random init). A missing file is an error naming ``make pretrain``; loading never trains.
    paper: the open_clip architecture ``model`` ('auto' = ViT-B-32) with weights from ``checkpoint`` (any format of
    :mod:`nbhelpers.checkpoints`; an image-tower file goes on top of ``pretrained``), the ``pretrained`` tag
    ('auto' = 'openai') or file, or random ('none'); ``protocol`` ('auto' = 'tecoa') sets the in-model resize
    and the returned preprocess (the generic one; per dataset: :func:`preprocess_for_protocol`).
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {sorted(PROFILES)}")
    if profile == "mini":
        if model not in ("auto", MINI_MODEL_NAME):
            raise ValueError(f"the mini profile uses {MINI_MODEL_NAME!r}; got model={model!r}")
        if protocol not in ("auto", "mini"):
            raise ValueError(f"the mini profile has one protocol, 'mini' (or 'auto'); got protocol={protocol!r}")
        if pretrained == "none" and not checkpoint:
            clip = build_mini_clip()
        else:
            path = Path(checkpoint).expanduser() if checkpoint else paths.MINI_CHECKPOINT
            if not checkpoint and not path.exists():
                raise FileNotFoundError(f"mini CLIP checkpoint {str(path)!r} not found; make it with `make pretrain` "
                                        "(= python -m nbhelpers.pretrain, about 7 minutes on 2 CPU cores).")
            clip = load_mini_clip(path)
        preprocess = preprocess_for(clip)
    else:
        arch = PAPER_MODEL_NAME if model == "auto" else model
        clip = build_open_clip(arch, pretrained=pretrained, checkpoint=str(checkpoint or ""),
                               allow_download=allow_download, protocol=paper_data.DEFAULT_PROTOCOL if protocol == "auto" else protocol)
        preprocess = preprocess_for(clip)
    return clip.to(device).eval(), preprocess


def timing_model(profile: str = "mini", *, model: str = "auto", pretrained: str = "auto", checkpoint: str = "",
                 protocol: str = "auto", device: torch.device | str = "cpu") -> tuple[ClipModel, Callable, str]:
    """(model, preprocess, how it was made) with the architecture, activation and input size of the model these
    arguments name but needing no weights file: for timing before a user has any (random weights of the same
    architecture time the same). paper: random weights (seed RANDOM_INIT_SEED) of the architecture, with QuickGELU
    where the named weights would have it (OpenAI's 'auto' / 'openai', any weights file); mini: the committed model
    (it is in the repository), or random where pretrained is 'none'."""
    if profile != "paper":
        clip, preprocess = create_model_and_transforms(profile, model=model, pretrained=pretrained,
                                                       checkpoint=checkpoint, device=device, protocol=protocol)
        return clip, preprocess, "its own weights" if pretrained != "none" else "random weights"
    arch = PAPER_MODEL_NAME if model == "auto" else model
    quick_gelu = pretrained in ("auto", "openai") or bool(checkpoint) or (
        pretrained != "none" and _looks_like_path(pretrained))
    clip = build_open_clip(arch, pretrained="none", protocol=paper_data.DEFAULT_PROTOCOL if protocol == "auto"
                           else protocol, quick_gelu=quick_gelu)
    how = (f"random weights of {arch} ({'QuickGELU' if quick_gelu else 'GELU'}, as the named weights): they time "
           "the same as trained ones")
    return clip.to(device).eval(), preprocess_for(clip), how


def _base_weights_file(arch: str, pretrained: str) -> str | None:
    """The full weights file `pretrained` stands for on this machine (a path, or OpenAI's ViT-B-32 in the HF
    cache), or None (random, a tag open_clip resolves, or missing)."""
    if pretrained not in ("auto", "openai", "none") and os.path.isfile(os.path.expanduser(pretrained)):
        return os.path.expanduser(pretrained)
    if pretrained in ("auto", "openai") and arch == PAPER_MODEL_NAME:
        return _openai_weights_cached()
    return None


def weights_identity(profile: str, *, model: str = "auto", pretrained: str = "auto",
                     checkpoint: str | os.PathLike | None = "") -> dict[str, str]:
    """What identifies the base weights in a cache key: architecture, tag, the sha256 of the weights file, and
    for a file holding only the image tower the sha256 of the full weights under it (``base_weights_sha256``)."""
    arch = (MINI_MODEL_NAME if profile == "mini" else PAPER_MODEL_NAME) if model == "auto" else model
    path: str | None = str(checkpoint) if checkpoint else None
    base: str | None = None
    if path is None and profile == "mini" and pretrained != "none":
        path = str(paths.MINI_CHECKPOINT)
    if profile == "paper":
        if path is None:
            path = _base_weights_file(arch, pretrained)
        elif os.path.isfile(path) and detect_tower(path) == "image":
            base = _base_weights_file(arch, pretrained) or "none"
    out = {"profile": profile, "model": arch, "pretrained": pretrained,
           "weights_sha256": file_fingerprint(path) if path and os.path.isfile(path) else "none"}
    if base is not None:
        out["base_weights_sha256"] = file_fingerprint(base) if base != "none" else "none"
    return out
