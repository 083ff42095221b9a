"""Result tables: every row records its config, model, model fingerprint and code version; written atomically."""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pandas as pd

from nbhelpers import paths
from nbhelpers.utils import atomic_path, code_version


PROVENANCE_COLUMNS = ("base_model", "model_fingerprint", "code_version", "config", "created")


def annotate(df: pd.DataFrame, *, config: dict, model: str, fingerprint: str) -> pd.DataFrame:
    """Copy of df with provenance columns: base_model, model_fingerprint, code_version, config (JSON), created (UTC).

    Refuses to overwrite a column of df with the same name (a table's own columns are never clobbered).
    """
    clash = sorted(set(PROVENANCE_COLUMNS) & set(df.columns))
    if clash:
        raise ValueError(f"result table already has provenance column(s) {clash}; rename them")
    values = (model, fingerprint, code_version(), json.dumps(config, sort_keys=True),
              dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    return df.assign(**dict(zip(PROVENANCE_COLUMNS, values)))


def write_table(df: pd.DataFrame, name: str, *, config: dict, model: str, fingerprint: str,
                directory: str | Path | None = None) -> Path:
    """Write results/<name>.csv (atomic rename) with provenance columns; returns the path."""
    target = Path(directory if directory is not None else paths.RESULTS_DIR) / f"{name}.csv"
    with atomic_path(target) as tmp:
        annotate(df, config=config, model=model, fingerprint=fingerprint).to_csv(tmp, index=False)
    return target
