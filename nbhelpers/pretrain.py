"""Contrastive pretraining of the mini CLIP on the procedural world (the embedded default's 'OpenAI weights').

Run ``python -m nbhelpers.pretrain`` to reproduce ``checkpoints/mini_clip.safetensors`` from its seed.
The loss is CLIP's symmetric InfoNCE, with one change that this world needs: short captions repeat inside a
batch ("a photo of a red object."), and the plain loss would push identical captions apart as negatives, so
the targets spread the probability uniformly over all pairs whose captions are identical. With all captions
distinct this is exactly open_clip's ``ClipLoss``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from nbhelpers import paths, world
from nbhelpers.config import cli_parser
from nbhelpers.models import MINI_MODEL_NAME, ClipModel, build_mini_clip, mini_model_config
from nbhelpers.zeroshot import build_class_embeddings, build_head
from nbhelpers.utils import atomic_path, code_version, progress_bar, select_device, sha256_file

DEFAULTS: dict[str, float | int] = {"steps": 1000, "batch_size": 256, "lr": 2e-3, "weight_decay": 0.05,
                                    "warmup": 100, "seed": 0}


def contrastive_loss(img: torch.Tensor, txt: torch.Tensor, captions: list[str], scale: torch.Tensor) -> torch.Tensor:
    """Symmetric CLIP loss on unit embeddings (N, D); identical captions count as positives of each other."""
    ids = {c: i for i, c in enumerate(dict.fromkeys(captions))}
    cap = torch.tensor([ids[c] for c in captions], device=img.device)
    same = (cap[:, None] == cap[None, :]).float()
    target = same / same.sum(1, keepdim=True)
    logits = scale * img @ txt.T
    return 0.5 * (torch.sum(-target * F.log_softmax(logits, 1), 1).mean()
                  + torch.sum(-target * F.log_softmax(logits.T, 1), 1).mean())


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: decay on matrices, none on gains, biases, embeddings' scale and logit_scale."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.ndim >= 2 and "embedding" not in name else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@torch.no_grad()
def quick_zero_shot(model: ClipModel, *, n: int = 512, device: torch.device | str = "cpu",
                    seed: int = 0) -> dict[str, float]:
    """Clean zero-shot accuracy (fraction) of the model on each mini-world zero-shot task (first n test images)."""
    model.eval()
    out = {}
    for task in world.ZERO_SHOT_TASKS:
        names = world.TASKS[task].classnames()
        head = build_head(model, build_class_embeddings(model, names, [world.PROMPT_TEMPLATE], device=device),
                          classnames=names, device=device)
        x, y = world.generate_task(task, n, seed=seed, split="test")
        out[task] = float((head(x.to(device)).argmax(1).cpu() == y).float().mean())
    return out


def train_mini_clip(*, steps: int = 1200, batch_size: int = 256, lr: float = 2e-3, weight_decay: float = 0.05,
                    warmup: int = 100, seed: int = 0, device: torch.device | str = "cpu",
                    progress: bool = True) -> tuple[ClipModel, list[float]]:
    """Train a fresh mini CLIP for `steps` AdamW steps on fresh world pairs; returns (model, loss per step)."""
    torch.manual_seed(seed)
    model = build_mini_clip(seed=seed).to(device).train()
    opt = torch.optim.AdamW(_param_groups(model, weight_decay), lr=lr, betas=(0.9, 0.98), eps=1e-6)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (
        1 + math.cos(math.pi * min(s, steps) / steps)))
    losses: list[float] = []
    bar = progress_bar(range(steps), desc="pretrain mini CLIP", disable=not progress, mininterval=2)
    for step in bar:
        images, captions = world.generate_pairs(batch_size, seed=world.derive_seed(seed, "pretrain", step))
        tokens = model.tokenize(captions, device=device)
        img = model.encode_image(images.to(device))
        txt = model.encode_text(tokens)
        loss = contrastive_loss(img, txt, captions, model.clip.logit_scale.exp().clamp(max=100))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % 50 == 0:
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    return model.eval(), losses


def save_mini_clip(model: ClipModel, path: str | os.PathLike, *, metadata: dict) -> Path:
    """Write the model's weights atomically to a safetensors file with JSON metadata; returns the path."""
    meta = {"model_name": MINI_MODEL_NAME, "config": json.dumps(mini_model_config()),
            "code_version": code_version(), **{k: json.dumps(v) for k, v in metadata.items()}}
    state = {k: v.detach().contiguous().cpu() for k, v in model.clip.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=meta)
    return Path(path)


def pretrain_mini_clip(*, out: str | os.PathLike = paths.MINI_CHECKPOINT, device: torch.device | str = "cpu",
                       progress: bool = True, **overrides: float | int) -> dict:
    """Train with DEFAULTS (+overrides), evaluate zero-shot, save to `out` with a JSON sidecar; returns the record."""
    unknown = set(overrides) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown pretraining options {sorted(unknown)}; allowed: {sorted(DEFAULTS)}")
    hp = {**DEFAULTS, **overrides}
    t0 = time.time()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model, losses = train_mini_clip(**hp, device=device, progress=progress)
    train_s = time.time() - t0
    acc = quick_zero_shot(model, device=device)
    record = {"hyperparameters": hp, "train_seconds": round(train_s, 1), "final_loss": round(losses[-1], 4),
              "zero_shot_accuracy": {k: round(v, 4) for k, v in acc.items()},
              "command": " ".join(["python -m nbhelpers.pretrain", *(f"--{k} {v}" for k, v in overrides.items())]),
              "torch": torch.__version__, "threads": torch.get_num_threads()}
    save_mini_clip(model, out, metadata=record)
    record["sha256"] = sha256_file(out)
    with atomic_path(Path(out).with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")
    return record


DEFAULTS_HELP = {"steps": "optimizer steps", "batch_size": "image-caption pairs per step", "lr": "peak AdamW learning rate",
                 "weight_decay": "AdamW weight decay", "warmup": "linear warm-up steps", "seed": "world and training seed"}


def build_parser() -> argparse.ArgumentParser:
    """The pretraining CLI's parser: one flag per DEFAULTS entry, --out, --device."""
    ap = cli_parser(__doc__.splitlines()[0], prog="python -m nbhelpers.pretrain")
    for k, v in DEFAULTS.items():
        ap.add_argument(f"--{k}", type=type(v), default=v, help=DEFAULTS_HELP[k])
    ap.add_argument("--out", default=str(paths.MINI_CHECKPOINT), help="the checkpoint written (and a .json beside it)")
    ap.add_argument("--device", default="cpu", help='"cpu", "cuda", "cuda:N" or "auto"')
    return ap


def main(argv: list[str] | None = None) -> int:
    """CLI: train the mini CLIP and write checkpoints/mini_clip.safetensors (+ .json)."""
    ap = build_parser()
    args = vars(ap.parse_args(argv))
    out, device = args.pop("out"), select_device(args.pop("device"))
    overrides = {k: v for k, v in args.items() if v != DEFAULTS[k]}
    print("training mini CLIP:", shlex.join(sys.argv), flush=True)
    record = pretrain_mini_clip(out=out, device=device, **overrides)
    print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
