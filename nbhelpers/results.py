"""Result tables: every row records its config, model, model fingerprint and code version; written atomically."""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pandas as pd

from nbhelpers import paths
from nbhelpers.utils import atomic_path, code_version


def annotate(df: pd.DataFrame, *, config: dict, model: str, fingerprint: str) -> pd.DataFrame:
    """Copy of df with provenance columns: model, model_fingerprint, code_version, config (JSON), created (UTC)."""
    out = df.copy()
    out["model"] = model
    out["model_fingerprint"] = fingerprint
    out["code_version"] = code_version()
    out["config"] = json.dumps(config, sort_keys=True)
    out["created"] = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return out


def write_table(df: pd.DataFrame, name: str, *, config: dict, model: str, fingerprint: str,
                directory: str | Path | None = None) -> Path:
    """Write results/<name>.csv (atomic rename) with provenance columns; returns the path."""
    target = Path(directory if directory is not None else paths.RESULTS_DIR) / f"{name}.csv"
    with atomic_path(target) as tmp:
        annotate(df, config=config, model=model, fingerprint=fingerprint).to_csv(tmp, index=False)
    return target
