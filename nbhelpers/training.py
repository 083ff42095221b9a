"""One adversarial fine-tuning engine for every image-side method; objectives and training attacks plug in through
the method's record (:mod:`methods`), and a run's cache key holds only the config fields its method reads.

Per step: a batch of the fine-tuning task (a deterministic function of the step, so a resumed run sees the same
data), a PGD attack on it against the current model (input-only gradients, class text embeddings fixed; FARE's
attack is label-free and maximises FARE's own embedding loss instead of the cross-entropy), then
the method's objective, an SGD-momentum step and a cosine learning rate with linear warm-up. The image tower
is tuned; the text side is frozen and enters only as fixed class embeddings (original, IAT-tuned, or
LAAT-expanded). BatchNorm statistics (the mini CLIP's ResNet) stay frozen (eval mode), as usual for fine-tuning.

Several processes: launched with torchrun, each rank takes its slice of every global batch and DDP averages
the gradients, so 2 ranks give the weights of 1 rank with the same global batch (tested with gloo on CPU).
Mixed precision (``amp=True``): the training attack runs its forward passes under bf16 autocast and sums its
objective in fp32 (see attacks); in the objective every image tower (the student's, the teacher's) runs under bf16
autocast and hands fp32 embeddings on (``fastpath.bf16_outputs``), so heads, losses and their reductions are fp32
(bf16 keeps fp32's exponent range, so nothing underflows and no loss scaling is needed). Device knobs, which change
speed only (``config.DeviceKnobs``, outside the cache key: ``SPEED_ONLY``): ``compile_tower`` runs the student's
image tower through ``torch.compile`` for the run; ``prefetch`` reads the next batch in a background thread while
the current one trains (pinned memory and a non-blocking copy on CUDA), with the same batches in the same order. Checkpoints are written atomically (temporary file + rename), hold weights, optimizer state, step and config,
and are loaded by ``checkpoints.load_torch_file`` (``torch.load(weights_only=True)``).
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import json
import math
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from nbhelpers import (analysis, attacks, fastpath, losses, methods, metrics, models, paper_data, paths, prompts, world,
                       zeroshot)
from nbhelpers.checkpoints import load_safetensors_file, load_torch_file
from nbhelpers.config import DeviceKnobs, FinetuneConfig, add_arguments, cli_parser, config_or_exit
from nbhelpers.data import stack_items
from nbhelpers.methods import StepContext
from nbhelpers.models import ClipModel, create_model_and_transforms, preprocess_for, weights_identity
from nbhelpers.utils import (atomic_path, code_version, content_key, file_fingerprint, fp32_at_least, numerics_versions,
                             pinned, progress_bar, select_device)
from nbhelpers.zeroshot import ZeroShotClassifier, build_class_embeddings, build_head, model_fingerprint

# bump with any change to the numbers this module computes (see utils.numerics_versions); 3 = the engine version
# of the source-hash keys before it
NUMERICS_VERSION = 3
# what the amp path computes, in amp runs' keys only (so no default key moves): 2 = the training attack under bf16
# too, and the objective's towers with fp32 outputs (fastpath.bf16_outputs) instead of the whole objective autocast
AMP_NUMERICS_VERSION = 2
# config fields that never change the trained weights beyond float rounding or where they are stored: not keyed
SPEED_ONLY = ("device", "checkpoint_every", "data_root", "seed", "batch_size", *DeviceKnobs.field_names())
INPUT_FILES = ("checkpoint", "iat_projection")  # keyed by their content (sha256), never by their path
# the fields every method's run reads: the backbone, the run's kind and the shared fine-tuning recipe (and its budget)
SHARED_RECIPE = ("profile", "model", "pretrained", "protocol", "amp", "method", "text_source", "adaptation",
                 "train_task", "finetune_steps", "finetune_lr", "train_batch_size", "warmup_steps", "momentum",
                 "weight_decay", "train_eps", "train_pgd_steps", "train_alpha", "train_seed")
# the fields an adaptation reads besides (visual prompts: their shape and their learning rate)
ADAPTATION_READS = {"finetune": (), "visual_prompt": ("prompt_pad", "prompt_tokens", "prompt_lr")}
# Every key's payload starts from these values of the method knobs, a constant: the knobs' values when a key held
# every config field (until issue 31). A method's key then overrides those it reads (Method.key_fields) and no
# other, so a knob moves only its readers' keys, a new knob (absent here) enters only its readers' keys, and every
# key of a config whose unread knobs sit at these values is the key it had before (05's committed store needed no
# rewrite: tests/test_cache_keys.py). Never edit it (that would move keys); never add a new knob to it.
KEY_BASE: dict[str, object] = {
    "pmg_alpha": 1.0, "pmg_beta": 1.0, "laat_spread": 1.5, "margin_offset": 0.0, "margin_kind": "asam",
    "asam_base": 0.0, "asam_gain": 0.05, "offset_weight": 0.2, "offset_eps": 4.0, "offset_every": 0,
    "tam_threshold": 0.5, "tam_margin": 0.1, "takd_weight": 1.0, "takd_temperature": 1.0, "takd_target": "clean",
    "partial_last_n": 9, "coadv_temperature": 0.1, "prompt_pad": -1, "prompt_tokens": 100, "prompt_lr": 40.0}


def key_fields(cfg: FinetuneConfig) -> tuple[str, ...]:
    """The config fields a run of cfg reads, so its cache key holds: the shared recipe, its method's own and its
    training attack's (methods.Method.key_fields), its adaptation's."""
    return tuple(dict.fromkeys((*SHARED_RECIPE, *methods.get(cfg.method).key_fields,
                                *ADAPTATION_READS[cfg.adaptation])))


def cache_key(cfg: FinetuneConfig) -> str:
    """Key of a run's trained weights: the config fields the run reads (key_fields, over KEY_BASE), the numerics
    versions of the engine, its objectives, attacks and zero-shot head, and the content (sha256) of every input
    file: base weights and IAT projection (a file rewritten in place with other bytes gives another key)."""
    d = {**KEY_BASE, **{k: getattr(cfg, k) for k in key_fields(cfg)}}
    if cfg.start_scheme() != "legacy":  # the counter start draws other noise: only its runs' keys hold it
        d["attack_start"] = cfg.start_scheme()
    d["numerics"] = numerics_versions(sys.modules[__name__], methods, losses, attacks, zeroshot, models)
    if cfg.amp:  # the amp path's own version: only amp runs' keys move with it
        d["numerics"]["training_amp"] = AMP_NUMERICS_VERSION
    if cfg.adaptation == "visual_prompt":  # prompts compute numbers only in prompted runs: no other key moves
        d["numerics"]["prompts"] = prompts.NUMERICS_VERSION
    d["base_weights"] = weights_identity(cfg.profile, model=cfg.model, pretrained=cfg.pretrained,
                                         checkpoint=cfg.checkpoint)
    d["iat_projection"] = file_fingerprint(cfg.iat_projection) if cfg.iat_projection else ""
    if cfg.profile == "paper" and paper_data.partial_data_allowed():  # a run that may train on partial data
        d["partial_data_allowed"] = True  # has its own key; no other key moves
    return content_key(d)


@dataclass
class FinetuneResult:
    """A fine-tuned model, its training history and where its weights are."""

    model: ClipModel
    history: pd.DataFrame
    path: Path | None
    config: FinetuneConfig
    seconds: float
    resumed_from: int = 0


@functools.lru_cache(maxsize=2)
def _mini_train_pool(task: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The mini world's training split of a task, rendered once per process (about 200 MB)."""
    return world.generate_task(task, split="train", seed=seed)


_DECODE_DATASET: object = None  # a decoding worker's dataset (set once by _init_decoder)


def _init_decoder(dataset: object) -> None:
    """A decoding worker's set-up: its copy of the dataset, one torch thread (the workers are the parallelism)."""
    global _DECODE_DATASET
    _DECODE_DATASET = dataset
    torch.set_num_threads(1)


def _decode_item(i: int) -> tuple[torch.Tensor, int]:
    """Item i of the worker's dataset: (image (3, S, S) in [0, 1], label), read, decoded and preprocessed here."""
    return _DECODE_DATASET[i]


class TrainData:
    """The fine-tuning set; batch(step) is a pure function of (seed, step).

    mini: the world's training pool in memory. paper: the train split of a local dataset (e.g. tinyimagenet, an
    image folder sorted by class), read lazily per item through the model's preprocess (PIL -> (3, S, S) in [0, 1]).
    ``first(n)`` is a prefix of a fixed order: the pool's own (already random) order on mini, a permutation seeded
    by train_seed on paper, so that n images span the classes of a class-sorted folder.
    """

    def __init__(self, cfg: FinetuneConfig, *, preprocess: Callable | None = None,
                 decode_workers: int | None = None) -> None:
        """decode_workers: processes that read and decode the paper set's items (None: cfg.decode_workers, 0 where cfg
        has none; speed only: batch(step) is the same tensors)."""
        self.name = cfg.finetune_task()
        self.decode_workers = getattr(cfg, "decode_workers", 0) if decode_workers is None else decode_workers
        if self.decode_workers < 0:
            raise ValueError(f"decode_workers must be >= 0, got {self.decode_workers}")
        self._pool: ProcessPoolExecutor | None = None
        if cfg.profile == "mini":
            self.images, self.labels = _mini_train_pool(self.name, cfg.train_seed)
            self.classnames = world.TASKS[self.name].classnames()
            self.templates = [world.PROMPT_TEMPLATE]
            self.n = len(self.labels)
            self.order = None
        else:  # paper scale: a local dataset (e.g. tinyimagenet), loaded lazily per batch
            if preprocess is None:
                raise ValueError(f"TrainData({self.name!r}) on the paper profile reads images from disk and needs "
                                 "the model's preprocess (create_model_and_transforms(...)[1] or "
                                 "models.preprocess_for(model))")
            if isinstance(preprocess, models.ProtocolPreprocess):  # the protocol's reading of this dataset: CIFAR-10/
                preprocess = preprocess.for_dataset(self.name)  # 100 and STL-10 at their native size under tecoa
                # (TeCoA's finetuning.py trains on them so), resized bicubically inside the model
            self.dataset, self.classnames = paper_data.load_paper_dataset(
                self.name, root=cfg.data_root or paths.DATA_ROOT, transform=preprocess, split="train")
            self.templates = [paper_data.TEMPLATE]
            self.images = None
            self.n = len(self.dataset)
            g = torch.Generator().manual_seed(world.derive_seed(cfg.train_seed, "train-subset"))
            self.order = torch.randperm(self.n, generator=g)
        self.seed = cfg.train_seed

    def _items(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (k, 3, S, S) in [0, 1] and labels (k,) at the given indices (k,) of the set."""
        if self.images is not None:
            return self.images[idx], self.labels[idx]
        if self.decode_workers == 0 or len(idx) < 2:
            return stack_items([self.dataset[int(i)] for i in idx], what=f"{self.name} (train)")
        if self._pool is None:  # forkserver: safe beside the prefetch thread; the dataset is sent once per worker
            self._pool = ProcessPoolExecutor(self.decode_workers, mp_context=multiprocessing.get_context("forkserver"),
                                             initializer=_init_decoder, initargs=(self.dataset,))
        chunk = max(1, -(-len(idx) // (4 * self.decode_workers)))
        items = list(self._pool.map(_decode_item, [int(i) for i in idx], chunksize=chunk))  # map keeps the order
        return stack_items(items, what=f"{self.name} (train)")

    def close(self) -> None:
        """Stop the decoding worker processes (if any); a later batch starts them again."""
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def __getstate__(self) -> dict:
        """Picklable (dispatch sends configs, not data; a copy starts its own workers)."""
        return {**self.__dict__, "_pool": None}

    def first(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first min(n, size) images (n, 3, S, S) in [0, 1] and labels (n,) of the set's fixed order."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        n = min(n, self.n)
        if self.order is None:
            return self.images[:n], self.labels[:n]
        return self._items(self.order[:n])

    def first_images(self, n: int) -> torch.Tensor:
        """The first n images (n, 3, S, S) in [0, 1] of the set's fixed order."""
        return self.first(n)[0]

    def batch(self, step: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Global batch of `step`: images (B, 3, S, S) in [0, 1], labels (B,); epochs reshuffle by seed."""
        if not 1 <= batch_size <= self.n:
            raise ValueError(f"train_batch_size must be in [1, {self.n}] (the size of {self.name}'s train split), "
                             f"got {batch_size}")
        per_epoch = self.n // batch_size
        epoch, k = divmod(step, per_epoch)
        g = torch.Generator().manual_seed(world.derive_seed(self.seed, "finetune-order", epoch))
        idx = torch.randperm(self.n, generator=g)[k * batch_size:(k + 1) * batch_size]
        return self._items(idx)


def _lr_at(step: int, cfg: FinetuneConfig) -> float:
    """Cosine learning rate with linear warm-up, peaking at finetune_lr (the tower) or prompt_lr (visual prompts)."""
    peak = cfg.prompt_lr if cfg.adaptation == "visual_prompt" else cfg.finetune_lr
    if step < cfg.warmup_steps:
        return peak * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, cfg.finetune_steps - cfg.warmup_steps)
    return peak * 0.5 * (1 + math.cos(math.pi * t))


def load_iat_projection(model: ClipModel, path: str | os.PathLike) -> None:
    """Install an IAT-tuned text projection (from notebook 03) into the model, checking its shape."""
    state, _ = load_safetensors_file(path, role="IAT text projection")
    if "text_projection" not in state:
        raise ValueError(f"IAT text projection {str(path)!r} holds {sorted(state)[:4]}, not 'text_projection'; pass "
                         "the file notebook 03 (text_tuning.load_or_tune_projection) wrote")
    proj = state["text_projection"]
    if proj.shape != model.clip.text_projection.shape:
        raise ValueError(f"{path}: text_projection {tuple(proj.shape)} does not fit this model "
                         f"{tuple(model.clip.text_projection.shape)}")
    with torch.no_grad():
        model.clip.text_projection.copy_(proj)


def with_iat_projection(model: ClipModel, path: str | os.PathLike) -> ClipModel:
    """A copy of model whose text side uses the IAT-tuned projection stored at path (the image side is shared)."""
    text_model = copy.deepcopy(model, memo={id(model.clip.visual): model.clip.visual})  # share, don't copy, visual
    load_iat_projection(text_model, path)
    return text_model


def text_side(cfg: FinetuneConfig, model: ClipModel) -> tuple[ClipModel, Callable[[torch.Tensor], torch.Tensor] | None]:
    """The one pairing of an image side with its text: (text model, transform of its class embeddings (C, D) or
    None) that a run of cfg trains against and is evaluated with: model's own text or the IAT-tuned projection
    (cfg.text_source), LAAT-expanded anchors when the method's record says so (methods.Method.text)."""
    text_model = with_iat_projection(model, cfg.iat_projection) if cfg.text_source == "iat" else model
    transform = (functools.partial(losses.laat_expand, spread=cfg.laat_spread)
                 if methods.get(cfg.method).text == "laat_expanded" else None)
    return text_model, transform


def class_embeddings_for(cfg: FinetuneConfig, model: ClipModel, classnames: list[str], templates: list[str], *,
                         device: torch.device) -> torch.Tensor:
    """Fixed class embeddings the image side trains against: original, IAT-tuned or LAAT-expanded (C, D)."""
    text_model, transform = text_side(cfg, model)
    emb = build_class_embeddings(text_model, classnames, templates, device=device)
    return transform(emb) if transform is not None else emb


def default_output(cfg: FinetuneConfig) -> Path:
    """Cache location of a config's fine-tuned weights: cache/finetune/<method>-<hash>.pt."""
    return paths.CACHE_DIR / "finetune" / f"{cfg.profile}-{cfg.method}-{cache_key(cfg)}.pt"


def _save(path: Path, *, student: ClipModel, opt: torch.optim.Optimizer, step: int, cfg: FinetuneConfig,
          history: list[dict], base_fingerprint: str, head: nn.Module | None = None) -> None:
    """Atomic checkpoint: image-tower weights, optimizer state, next step, config, history, provenance (and the
    linear head of a method that trains one, needed to resume; evaluation reads the tower only). A prompted run
    (adaptation "visual_prompt") saves its prompts alone, in TeCoA's layout ('state_dict', 'add_prompter'), so the
    file also loads as TeCoA's released prompts do."""
    tower = (prompts.prompt_checkpoint(student) if cfg.adaptation == "visual_prompt"
             else {"visual": {k: v.detach().cpu() for k, v in student.visual.state_dict().items()}})
    state = {**tower,
             **({"head": {k: v.detach().cpu() for k, v in head.state_dict().items()}} if head is not None else {}),
             "optimizer": opt.state_dict(), "step": step, "config": json.dumps(cfg.to_dict()),
             "history": json.dumps(history), "code_version": code_version(), "base_fingerprint": base_fingerprint,
             "model_name": student.model_name}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _run_fields(config: dict, fields: tuple[str, ...]) -> dict:
    """The fields of a run's config (as a dict) that its weights depend on (key_fields, the input files and the
    random-start scheme): a run may resume with other device knobs and other values of knobs its method does not
    read. A checkpoint written before attack_start existed ran the "auto" scheme."""
    config = {"attack_start": "auto", **config}
    return {k: config.get(k) for k in (*fields, *INPUT_FILES, "attack_start")}


def load_checkpoint(path: str | os.PathLike, *, expect_model: str | None = None) -> dict:
    """Read a fine-tuning checkpoint safely (checkpoints.load_torch_file); checks the architecture name if given."""
    state = load_torch_file(path, role="fine-tuning checkpoint")
    if expect_model is not None and state.get("model_name") != expect_model:
        raise ValueError(f"{path} holds a {state.get('model_name')!r} checkpoint, not {expect_model!r}")
    return state


def _dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def method_margins(cfg: FinetuneConfig, emb: torch.Tensor) -> torch.Tensor | None:
    """TAI's (C, C) class-pair margins in cosine units (TAM or ASAM) from the class embeddings; None otherwise
    (also for "tam_sample", whose margins depend on each sample and are made in the objective)."""
    if not methods.get(cfg.method).needs_offset or cfg.margin_kind in ("none", "tam_sample"):
        return None
    if cfg.margin_kind == "tam":
        return losses.tam_margins(emb, threshold=cfg.tam_threshold, margin=cfg.tam_margin)
    return losses.asam_margins(emb, base=cfg.asam_base, gain=cfg.asam_gain, offset=cfg.margin_offset,
                               offset_weight=cfg.offset_weight)


class ImageEncoder(nn.Module):
    """A CLIP's unnormalised image embeddings as a module (FARE's space): images (N, 3, S, S) in [0, 1] -> (N, D)."""

    def __init__(self, model: ClipModel) -> None:
        super().__init__()
        self.model = model
        self.train(model.training)  # mirror the model: the attack restores this flag, and BatchNorm stays in eval

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Embeddings (N, D), not normalised."""
        return self.model.encode_image(images, normalize=False)


@dataclass
class Engine:
    """What one optimisation step of :func:`finetune` needs, built once per run by :func:`make_engine`."""

    cfg: FinetuneConfig
    opt: torch.optim.Optimizer
    attack_head: ZeroShotClassifier
    logits: Callable[[torch.Tensor], torch.Tensor]
    features: Callable[[torch.Tensor], torch.Tensor]
    teacher: ZeroShotClassifier | None
    class_embeddings: torch.Tensor
    scale: float
    margins: torch.Tensor | None
    device: torch.device
    fast_attack: bool = False  # pgd_attack(fast=True); finetune keeps the default path (bit-identical runs)
    image_encoder: ImageEncoder | None = None  # the student's unnormalised embeddings: FARE's attack ascends on them
    head: nn.Module | None = None  # the linear head of a method with Method.head == "linear" (trained with the tower)
    method: methods.Method | None = None  # cfg.method's record (looked up once, by make_engine)

    def __post_init__(self) -> None:
        if self.method is None:
            self.method = methods.get(self.cfg.method)


class LinearHeadClassifier(nn.Module):
    """A linear head on a CLIP's unnormalised image embeddings: images (N, 3, S, S) in [0, 1] -> logits (N, C)."""

    def __init__(self, model: ClipModel, head: nn.Linear) -> None:
        super().__init__()
        self.model, self.head = model, head
        self.train(model.training)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (N, C)."""
        return self.head(self.model.encode_image(images, normalize=False))


def make_linear_head(cfg: FinetuneConfig, emb: torch.Tensor) -> nn.Linear:
    """The new linear layer of one-hot adversarial training (D -> C over the fine-tuning classes of emb (C, D)):
    weights N(0, 1/D) drawn from a generator seeded by train_seed, zero bias (ours: TeCoA does not say)."""
    n_classes, dim = emb.shape
    head = nn.Linear(dim, n_classes).to(emb.device, emb.dtype)  # the precision of the class embeddings
    g = torch.Generator().manual_seed(world.derive_seed(cfg.train_seed, "linear-head"))
    with torch.no_grad():
        head.weight.copy_(torch.randn(n_classes, dim, generator=g) / math.sqrt(dim))
        head.bias.zero_()
    return head


def make_engine(cfg: FinetuneConfig, student: ClipModel, emb: torch.Tensor, opt: torch.optim.Optimizer, *,
                teacher: ZeroShotClassifier | None, scale: float, visual: torch.nn.Module | None = None,
                device: torch.device | str = "cpu", head: nn.Linear | None = None) -> Engine:
    """The step's closures over the student: features (N, D) and logits (N, C) of images in [0, 1], attack head.

    visual: the image tower to call (student.visual, or its DDP wrapper); emb: fixed class embeddings (C, D);
    head: a linear head (make_linear_head) that the logits and the training attack go through instead of the text.
    """
    device = torch.device(device)
    tower = student.visual if visual is None else visual

    def features(x: torch.Tensor) -> torch.Tensor:  # resized inside the model when x is at another size (TeCoA's)
        return tower(student.model_inputs(x))

    def logits(x: torch.Tensor) -> torch.Tensor:  # the zero-shot head over the class text, or the linear head
        return scale * F.normalize(features(x), dim=-1) @ emb.T if head is None else head(features(x))

    attack_head: nn.Module = (build_head(student, emb, logit_scale=scale, device=device) if head is None
                              else LinearHeadClassifier(student, head))
    return Engine(cfg, opt, attack_head, logits, features, teacher, emb, scale, method_margins(cfg, emb), device,
                  image_encoder=ImageEncoder(student), head=head)


def teacher_and_scale(method: methods.Method, base: ClipModel, emb: torch.Tensor, *,
                      device: torch.device | str = "cpu") -> tuple[ZeroShotClassifier | None, float]:
    """(frozen teacher head or None, logit scale) of a method's engine: the scale is 1 (raw cosine logits) for a
    method whose record says logit_units "cosine" (PMG-AFT's code), else the base model's; the teacher (needs_teacher)
    is the frozen base over emb (C, D) at that scale, and base's parameters stop requiring gradients."""
    scale = 1.0 if method.logit_units == "cosine" else base.logit_scale()
    teacher = build_head(base, emb, logit_scale=scale, device=device) if method.needs_teacher else None
    if teacher is not None:
        for p in base.parameters():
            p.requires_grad_(False)
    return teacher, scale


def fare_targets(engine: Engine, x: torch.Tensor) -> torch.Tensor:
    """FARE's targets: the frozen pre-trained model's unnormalised embeddings (N, D) of clean images x in [0, 1]."""
    if engine.teacher is None:
        raise ValueError("FARE needs the frozen pre-trained model (Engine.teacher); build the engine with teacher=")
    with torch.no_grad():
        return engine.teacher.model.encode_image(x, normalize=False)


def training_attack(engine: Engine, x: torch.Tensor, y: torch.Tensor, noise: torch.Tensor, *,
                    clean_targets: torch.Tensor | None = None) -> torch.Tensor | None:
    """The method's training attack (its record's :class:`methods.TrainingAttack`): adversarial images
    (N, 3, S, S) in [0, 1] at train eps from the start noise (N, 3, S, S) in [-1, 1]; None for a method without one.

    clean_targets (N, D): the frozen pre-trained embeddings of x for an attack that asks for them (FARE's; default:
    :func:`fare_targets`); y (N,) is what a label-using attack (PGD on the training head's cross-entropy) reads.
    """
    cfg, attack = engine.cfg, engine.method.training_attack
    if attack.run is None:
        return None
    if attack.clean_targets and clean_targets is None:
        clean_targets = fare_targets(engine, x)
    budget = dict(eps=cfg.train_eps / 255, alpha=cfg.train_alpha / 255, steps=cfg.train_pgd_steps,
                  start_noise=noise, fast=engine.fast_attack, amp=cfg.amp)
    return attack.run(methods.AttackContext(cfg, x, y, engine.attack_head, engine.image_encoder, clean_targets,
                                            budget))


def measure_head_offset(head: ZeroShotClassifier, data: TrainData, cfg: FinetuneConfig, *, eps_large: float,
                        n: int = 256, steps: int = 10, device: torch.device | str = "cpu") -> dict[str, float]:
    """The one margin-offset measurement on the fine-tuning task: mean margin(eps_large) - margin(cfg.train_eps)
    under PGD-steps on data.first(n), in logits and in cosine units (divided by head.logit_scale: the unit of the
    ASAM margins). Keys: offset_logits, offset_cosine, logit_scale, eps_small, eps_large.

    Seeding: the attacks' random starts are seeded by cfg.train_seed, the seed that also drew the images (data.seed):
    the offset calibrates or steers training, so it follows the training seed and never the evaluation seed
    cfg.seed (which the weights' cache key leaves out).
    """
    if data.seed != cfg.train_seed:
        raise ValueError(f"data was drawn with train_seed {data.seed}, cfg has train_seed {cfg.train_seed}")
    x, y = data.first(n)
    sweep, _ = metrics.margin_sweep(head, x, y, eps_list=[cfg.train_eps, eps_large], steps=steps,
                                    batch_size=cfg.batch_size, device=device, seed=cfg.train_seed)
    offset = float(analysis.margin_offsets(sweep).iloc[0].offset_mean)
    return {"offset_logits": offset, "offset_cosine": offset / head.logit_scale, "logit_scale": head.logit_scale,
            "eps_small": cfg.train_eps, "eps_large": eps_large}


def measure_margin_offset(model: ClipModel, cfg: FinetuneConfig, *, eps_large: float, n: int = 256,
                          steps: int = 10, preprocess: Callable | None = None,
                          device: torch.device | str = "cpu") -> dict[str, float]:
    """Notebook 01's offset of a model on the fine-tuning task (:func:`measure_head_offset` against the model's own
    class embeddings of the task's classes, with its own logit scale).

    preprocess: how the paper profile reads the images (None: the one create_model_and_transforms pairs with model).
    """
    data = TrainData(cfg, preprocess=preprocess if preprocess is not None else preprocess_for(model))
    emb = build_class_embeddings(model, data.classnames, data.templates, device=device)
    head = build_head(model, emb, device=device)
    return measure_head_offset(head, data, cfg, eps_large=eps_large, n=n, steps=steps, device=device)


def engine_towers(engine: Engine) -> list[nn.Module]:
    """The image towers an objective calls: the student's and, if there is one, the frozen teacher's."""
    towers = [engine.image_encoder.model.visual] if engine.image_encoder is not None else []
    if engine.teacher is not None:
        towers.append(engine.teacher.model.visual)
    return towers


TRAIN_STREAM = 1 << 32  # counter streams of the training attack: TRAIN_STREAM + step (evaluation uses stream 0)


def train_start_noise(train_seed: int, step: int, index: torch.Tensor, shape: tuple[int, ...] | torch.Size, *,
                      device: torch.device | str) -> torch.Tensor:
    """The counter scheme's training-attack start noise (N, *shape) in [-1, 1) of the images at positions index (N,)
    of step's global batch, drawn on device: the same bits on every device, rank split and prefetch setting."""
    return attacks.counter_start_noise(train_seed, index, shape, stream=TRAIN_STREAM + step, device=device)


def iter_train_batches(data: TrainData, cfg: FinetuneConfig, *, start: int, stop: int, device: torch.device,
                       rank: int = 0, world_size: int = 1,
                       prefetch: bool = False) -> Iterator[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(step, images (B/R, 3, S, S) in [0, 1], labels (B/R,), start noise (B/R, 3, S, S) in [-1, 1]) on device for
    steps start..stop-1: rank's slice of each global batch and of its seeded attack noise.

    prefetch: step k+1 is read in one background thread while step k is consumed (pinned memory and a non-blocking
    copy on CUDA), yielding exactly the tensors of prefetch=False in the same order."""

    counter = cfg.start_scheme() == "counter"

    def load(step: int) -> tuple[torch.Tensor, ...]:
        x, y = data.batch(step, cfg.train_batch_size)
        if counter:  # drawn on the device in moved(): here only the rank's positions in the global batch
            noise = torch.arange(len(x))
        else:
            g = torch.Generator().manual_seed(world.derive_seed(cfg.train_seed, "train-attack", step))
            noise = 2 * torch.rand(x.shape, generator=g) - 1  # random start of the global batch, sliced per rank
        parts = tuple(t[rank::world_size] for t in (x, y, noise))
        return tuple(pinned(t.contiguous()) for t in parts) if prefetch and device.type == "cuda" else parts

    def moved(step: int, parts: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        x, y, noise = (t.to(device, non_blocking=prefetch) for t in parts)
        if counter:
            noise = train_start_noise(cfg.train_seed, step, noise, x.shape[1:], device=device)
        return x, y, noise

    if not prefetch:
        for step in range(start, stop):
            yield (step, *moved(step, load(step)))
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch") as pool:
        ahead = pool.submit(load, start) if start < stop else None
        for step in range(start, stop):
            parts = ahead.result()
            ahead = pool.submit(load, step + 1) if step + 1 < stop else None
            yield (step, *moved(step, parts))


def train_step(engine: Engine, step: int, x: torch.Tensor, y: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """One step: the method's training attack from the given start noise (N, 3, S, S) in [-1, 1], the method's
    objective on images x (N, 3, S, S) in [0, 1] with labels y (N,), SGD update at the scheduled lr; returns the
    loss (scalar)."""
    cfg, opt, method = engine.cfg, engine.opt, engine.method
    targets = fare_targets(engine, x) if method.training_attack.clean_targets else None
    adv = training_attack(engine, x, y, noise, clean_targets=targets)
    for group in opt.param_groups:
        group["lr"] = _lr_at(step, cfg)
    ctx = StepContext(cfg, x, adv, y, engine.logits, engine.features, engine.teacher, engine.class_embeddings,
                      engine.scale, engine.margins, targets)
    with fastpath.bf16_outputs(*engine_towers(engine), enabled=cfg.amp):  # amp: bf16 towers, fp32 from there on
        loss = fp32_at_least(method.objective(ctx))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    _, world_size = _dist_info()
    if engine.head is not None and world_size > 1:  # DDP averages the tower's gradients; the head's, here
        for p in engine.head.parameters():
            dist.all_reduce(p.grad)
            p.grad /= world_size
    opt.step()
    return loss


def finetune(cfg: FinetuneConfig, *, device: torch.device | str = "cpu", out: str | os.PathLike | None = None,
             resume: bool = True, stop_after: int | None = None, progress: bool = True) -> FinetuneResult:
    """Fine-tune the image tower with cfg.method; resumes from `out` if it holds an unfinished run.

    stop_after: stop (after checkpointing) once this many total steps are done (for tests of resumption).
    """
    device = torch.device(device)
    rank, world_size = _dist_info()
    out_path = Path(out) if out is not None else default_output(cfg)
    t0 = time.time()
    base, preprocess = create_model_and_transforms(**cfg.model_spec(), device=device)
    base_fp = model_fingerprint(base)
    data = TrainData(cfg, preprocess=preprocess)
    emb = class_embeddings_for(cfg, base, data.classnames, data.templates, device=device)
    method = methods.get(cfg.method)
    if method.input_norm != "clip":  # the student's and the teacher's inputs (PMG-AFT's code: ImageNet's mean/std)
        models.set_input_norm(base, method.input_norm)
    student = copy.deepcopy(base).eval()
    tower = [p for name, p in student.named_parameters() if name.startswith("clip.visual.")]
    trained = {id(p) for p in (tower[-cfg.partial_last_n:] if method.trainable == "last_n" else tower)}
    if cfg.adaptation == "visual_prompt":  # CLIP frozen: only the prompts learn (TeCoA's visual prompting)
        if method.trainable != "all":
            raise ValueError(f"method {cfg.method!r} trains part of the tower; it cannot also be prompted")
        prompts.attach_prompts(student, pad=cfg.prompt_pad, tokens=cfg.prompt_tokens,
                               seed=world.derive_seed(cfg.train_seed, "visual-prompts"))
        trained = {id(p) for p in prompts.prompted_visual(student).prompt_parameters()}
    for p in student.parameters():
        p.requires_grad_(id(p) in trained)
    teacher, scale = teacher_and_scale(method, base, emb, device=device)
    head = make_linear_head(cfg, emb) if method.head == "linear" else None
    params = [p for p in student.parameters() if p.requires_grad] + (list(head.parameters()) if head else [])
    opt = torch.optim.SGD(params, lr=cfg.finetune_lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    history: list[dict] = []
    start = 0
    if resume and out_path.is_file():
        state = load_checkpoint(out_path, expect_model=student.model_name)
        if _run_fields(json.loads(state["config"]), key_fields(cfg)) != _run_fields(cfg.to_dict(), key_fields(cfg)):
            raise ValueError(f"{out_path} was written by another config; remove it or choose another output")
        if cfg.adaptation == "visual_prompt":
            prompts.assign_prompts(student, state)
        else:
            student.visual.load_state_dict(state["visual"])
        if head is not None:
            head.load_state_dict(state["head"])
        opt.load_state_dict(state["optimizer"])
        start, history = int(state["step"]), json.loads(state["history"])
    visual = student.visual
    ddp_visual = torch.nn.parallel.DistributedDataParallel(visual) if world_size > 1 else visual
    engine = make_engine(cfg, student, emb, opt, teacher=teacher, scale=scale, visual=ddp_visual, device=device,
                         head=head)
    bar = progress_bar(desc=f"finetune {cfg.method}", disable=not progress or rank != 0, initial=start,
               total=cfg.finetune_steps, mininterval=2)
    remeasure = method.needs_offset and cfg.margin_kind == "asam" and cfg.offset_every > 0
    offset = (float(history[-1].get("margin_offset", cfg.margin_offset)) if history else cfg.margin_offset
              ) if remeasure else None
    stop = cfg.finetune_steps if stop_after is None else min(cfg.finetune_steps, max(start + 1, stop_after))
    batches = iter_train_batches(data, cfg, start=start, stop=stop, device=device, rank=rank, world_size=world_size,
                                 prefetch=cfg.prefetch_on(device.type))
    with fastpath.compiled(visual, enabled=cfg.compile_tower):
        for step, x, y, noise in batches:
            if remeasure and step % cfg.offset_every == 0 and step > 0:  # truly adaptive ASAM (ours): the offset now
                offset = measure_head_offset(engine.attack_head, data, cfg, eps_large=cfg.offset_eps,
                                             device=engine.device)["offset_cosine"]
            if remeasure:
                engine.margins = method_margins(dataclasses.replace(cfg, margin_offset=offset), emb)
            loss = train_step(engine, step, x, y, noise)
            history.append({"step": step, "loss": loss.item(), "lr": opt.param_groups[0]["lr"],
                            **({"margin_offset": offset} if remeasure else {})})
            bar.update(1)
            done = step + 1
            if rank == 0 and (done % cfg.checkpoint_every == 0 or done == cfg.finetune_steps or done == stop_after):
                _save(out_path, student=student, opt=opt, step=done, cfg=cfg, history=history,
                      base_fingerprint=base_fp, head=head)
    bar.close()
    for p in student.parameters():
        p.requires_grad_(False)
    return FinetuneResult(student.eval(), pd.DataFrame(history), out_path if rank == 0 else None, cfg,
                          time.time() - t0, start)


def load_or_finetune(cfg: FinetuneConfig, *, device: torch.device | str = "cpu",
                     progress: bool = True) -> FinetuneResult:
    """Fine-tuned model for cfg from the cache (keyed by the full config), training (or resuming) if needed."""
    path = default_output(cfg)
    if path.is_file():
        state = load_checkpoint(path)
        if int(state["step"]) >= cfg.finetune_steps:
            base, _ = create_model_and_transforms(**cfg.model_spec(), device=device)
            if state["model_name"] != base.model_name:
                raise ValueError(f"{path} holds a {state['model_name']!r} checkpoint, not {base.model_name!r}")
            if cfg.adaptation == "visual_prompt":
                prompts.load_prompts(base, state)
            else:
                base.visual.load_state_dict(state["visual"])
            input_norm = methods.get(cfg.method).input_norm
            if input_norm != "clip":  # the model it trained as (finetune)
                models.set_input_norm(base, input_norm)
            for p in base.parameters():
                p.requires_grad_(False)
            return FinetuneResult(base.eval(), pd.DataFrame(json.loads(state["history"])), path, cfg, 0.0,
                                  int(state["step"]))
    return finetune(cfg, device=device, out=path, progress=progress)


def selected_defaults(method: str, *, text_source: str = "original", profile: str = "mini",
                      path: str | os.PathLike | None = None) -> dict[str, object] | None:
    """The fine-tuning knobs 06 selected for an engine method (the record of methods whose engine it is and whose
    text matches text_source: tai + iat text is TIMA), from the committed selection file; None if there is none."""
    path = Path(path) if path is not None else paths.STUDY_SELECTION
    wants_iat = text_source == "iat"
    record = next((m for m in methods.all_methods() if m.engine == method and m.needs_iat == wants_iat
                   and m.selection), None)
    if record is None or not path.is_file():
        return None
    saved = json.loads(path.read_text())
    if saved.get("profile") != profile:
        return None
    try:
        chosen = methods.selected_overrides(record.name, saved["selected"])
    except KeyError:
        return None
    fields = set(FinetuneConfig.field_names())
    return {k: v for k, v in chosen.items() if k in fields}


def build_parser() -> argparse.ArgumentParser:
    """The training CLI's parser: one flag per FinetuneConfig field (absent from the namespace unless given), --out."""
    ap = cli_parser("adversarial fine-tuning (one engine, every method); without --finetune_lr a method trains at "
                    "the configuration notebook 06 selected for it", prog="python -m nbhelpers.training",
                    usage="%(prog)s [--FIELD VALUE ...] [--out OUT]   (one flag per FinetuneConfig field; --help)")
    add_arguments(ap, FinetuneConfig, given_only=True)
    ap.add_argument("--out", default="", help="checkpoint file, resumed if it exists (empty: the cache entry of "
                                              "the config, where notebooks 04 and 05 look it up)")
    return ap


def main(argv: list[str] | None = None) -> int:
    """CLI (also under torchrun): python -m nbhelpers.training --method tecoa --out run.pt

    Without --finetune_lr, a method trains at the configuration notebook 06 selected for it on the validation tasks
    (results/06_selected.json; flags given explicitly still win); a method 06 did not select (ft_standard, or any on
    the paper profile) is refused until --finetune_lr is given: the knobs' defaults are not a recommendation.
    """
    ap = build_parser()
    args = vars(ap.parse_args(argv))
    out = args.pop("out") or None
    given = dict(args)
    params = {**FinetuneConfig.defaults(), **given}
    config_or_exit(ap, FinetuneConfig, params)  # an unknown method, profile or value is named first, with choices
    if "finetune_lr" not in given:
        chosen = selected_defaults(str(params["method"]), text_source=str(params["text_source"]),
                                   profile=str(params["profile"]))
        if chosen is None:
            ap.error(f"method {params['method']!r} has no configuration selected by notebook 06 on the "
                     f"{params['profile']} profile ({paths.STUDY_SELECTION.name}); pass --finetune_lr (and the "
                     "method's knobs) explicitly")
        params.update({k: v for k, v in chosen.items() if k not in given})
        print(json.dumps({"configuration": "selected by 06 on the validation tasks", **chosen}), file=sys.stderr)
    cfg = config_or_exit(ap, FinetuneConfig, params)
    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1:
        dist.init_process_group("nccl" if cfg.device.startswith("cuda") else "gloo")
    device = select_device(cfg.device)
    if device.type == "cuda" and dist.is_initialized():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    result = finetune(cfg, device=device, out=out)
    if result.path is not None:
        print(json.dumps({"out": str(result.path), "seconds": round(result.seconds, 1),
                          "final_loss": float(result.history.loss.iloc[-1])}))
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
