"""Project paths, resolved from the package location (never from the working directory)."""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = PACKAGE_DIR.parent
FIGURES_DIR = Path(os.environ.get("TIMA_FIGURES_DIR", PROJECT_ROOT / "figures"))
RESULTS_DIR = Path(os.environ.get("TIMA_RESULTS_DIR", PROJECT_ROOT / "results"))
CACHE_DIR = Path(os.environ.get("TIMA_CACHE_DIR", PROJECT_ROOT / "cache"))
CHECKPOINT_DIR = PROJECT_ROOT / "checkpoints"
MINI_CHECKPOINT = Path(os.environ.get("TIMA_MINI_CHECKPOINT", CHECKPOINT_DIR / "mini_clip.safetensors"))
DATA_ROOT = Path(os.environ.get("TIMA_DATA_ROOT", PROJECT_ROOT / "data"))
# notebook 06's resumable store: an input of 04 and 05 (their selected configurations), so it is read from the
# repository even when TIMA_RESULTS_DIR sends a run's outputs elsewhere
STUDY_STORE = Path(os.environ.get("TIMA_STUDY_STORE", PROJECT_ROOT / "results" / "06_study.jsonl"))
# the configuration 06 selected per method on the validation tasks (derived from STUDY_STORE by study_runs, committed;
# a test checks it against the store): the training CLI's defaults, read without importing the study
STUDY_SELECTION = PROJECT_ROOT / "results" / "06_selected.json"
# the same study rerun end to end on a lent NVIDIA H100 (same code and keys, GPU floating point): notebook 06's
# replication section; written by `python -m nbhelpers.study_runs --device cuda --store <this path>` on that machine
STUDY_REPLICA_STORE = PROJECT_ROOT / "results" / "06_study_h100.jsonl"
# issue 22's pre-registered confirmatory experiment (docs/CONFIRMATORY_PLAN.md): round 2 of the search and the
# confirmatory runs, written by `python -m nbhelpers.confirm --run`; rendered by notebook 06
CONFIRM_STORE = Path(os.environ.get("TIMA_CONFIRM_STORE", PROJECT_ROOT / "results" / "06_confirmatory.jsonl"))


def display_paths(files: "list[str | os.PathLike]") -> list[str]:
    """Paths as a reader should see them: relative to the project root where they lie under it, else unchanged."""
    out = []
    for f in files:
        path = Path(f).resolve()
        out.append(str(path.relative_to(PROJECT_ROOT)) if path.is_relative_to(PROJECT_ROOT) else str(f))
    return out
