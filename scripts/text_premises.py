#!/usr/bin/env python
"""Text-side premise statistics of docs/WORLD2_PREMISES.md (section 0): how crowded class text embeddings are.

Without --embeddings: every mini-world task (the zero-shot ones and the fine-tuning task) with the committed mini
CLIP, its one prompt template and the tasks' class names. With --embeddings FILE: a (C, D) array of class text
embeddings (.npy, or a tensor saved by torch.save and read with weights_only), e.g. LAAT's released anchors, which
is how the real-CLIP reference values R2, R3 and R5 of that document were computed. Prints one JSON object per
line (analysis.text_crowding_stats; on the mini world also the ground-truth agreement); computes in seconds.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from nbhelpers import analysis, checkpoints, premises, world
from nbhelpers.models import create_model_and_transforms


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--embeddings", default="", help="a (C, D) array of class text embeddings (.npy or .pt); "
                    "empty: the mini world's tasks with the committed mini CLIP")
    return ap


def read_embeddings(path: str | Path) -> torch.Tensor:
    """A (C, D) float array from .npy (numpy, no pickle) or .pt (torch.load, weights_only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; pass a .npy or .pt file of class text embeddings (C, D)")
    if path.suffix == ".npy":
        emb = torch.from_numpy(np.load(path, allow_pickle=False))
    elif path.suffix in (".pt", ".pth"):
        emb = checkpoints.load_torch_file(path, role="embeddings")  # the package's one safe torch.load
    else:
        raise ValueError(f"{path}: unknown format {path.suffix!r}; pass .npy or .pt")
    if not isinstance(emb, torch.Tensor) or emb.dim() != 2:
        raise ValueError(f"{path}: expected a (C, D) array of class embeddings, got "
                         f"{tuple(emb.shape) if isinstance(emb, torch.Tensor) else type(emb).__name__}")
    return emb


def mini_world_stats() -> list[dict[str, object]]:
    """The text statistics of every zero-shot task and the fine-tuning task, committed mini CLIP, original text
    (premises.text_premise_stats, as notebook 00 measures them)."""
    model, _ = create_model_and_transforms("mini")
    stats = premises.text_premise_stats(model, tasks=[*world.ZERO_SHOT_TASKS, world.FINETUNE_TASK])
    return stats.to_dict(orient="records")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.embeddings:
        try:
            rows = [{"file": Path(args.embeddings).name, **analysis.text_crowding_stats(read_embeddings(args.embeddings))}]
        except (OSError, ValueError) as err:
            print(f"text_premises: {err}", file=sys.stderr)
            return 2
    else:
        rows = mini_world_stats()
    for row in rows:
        print(json.dumps({k: (None if v != v else round(v, 4)) if isinstance(v, float) else v  # NaN: not measured
                          for k, v in row.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
