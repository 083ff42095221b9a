"""Result tables: results/<name>.csv holds the table's own columns only; its provenance (config, base model, model
fingerprint, code version, torch, time) is written once, to results/<name>.meta.json beside it. Writes are atomic.
"""
from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from pathlib import Path

import pandas as pd
import torch

from nbhelpers import paths
from nbhelpers.utils import atomic_path, code_version


def provenance_stamp(*, config: Mapping, model: str, fingerprint: str | None = None, **extra: object) -> dict:
    """The one provenance stamp: config, base_model, model_fingerprint (when given), code_version, torch, created
    (UTC, seconds), plus extra run-constant fields (e.g. device)."""
    stamp = {"config": dict(config), "base_model": model, "code_version": code_version(), "torch": torch.__version__,
             "created": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), **extra}
    if fingerprint is not None:
        stamp["model_fingerprint"] = fingerprint
    return stamp


def meta_path(table: str | Path) -> Path:
    """The metadata file beside a table file: results/NN_name.csv (or .jsonl) -> results/NN_name.meta.json."""
    table = Path(table)
    return table.with_name(f"{table.stem}.meta.json")


def write_table(df: pd.DataFrame, name: str, *, config: Mapping, model: str, fingerprint: str,
                directory: str | Path | None = None) -> Path:
    """Write results/<name>.csv (the table only) and results/<name>.meta.json (provenance stamp, columns, rows),
    each atomically; returns the csv path."""
    target = Path(directory if directory is not None else paths.RESULTS_DIR) / f"{name}.csv"
    meta = {**provenance_stamp(config=config, model=model, fingerprint=fingerprint),
            "columns": [str(c) for c in df.columns], "rows": len(df)}
    with atomic_path(target) as tmp:
        df.to_csv(tmp, index=False)
    with atomic_path(meta_path(target)) as tmp:
        tmp.write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    return target


def read_table(name: str, *, directory: str | Path | None = None) -> tuple[pd.DataFrame, dict]:
    """(table, metadata) of results/<name>.csv; refuses a table whose columns or row count differ from its meta."""
    target = Path(directory if directory is not None else paths.RESULTS_DIR) / f"{name}.csv"
    df = pd.read_csv(target)
    meta_file = meta_path(target)
    if not meta_file.is_file():
        raise FileNotFoundError(f"{target} has no metadata file {meta_file.name}; rewrite it with write_table")
    meta = json.loads(meta_file.read_text())
    if [str(c) for c in df.columns] != meta["columns"] or len(df) != meta["rows"]:
        raise ValueError(f"{target.name} does not match {meta_file.name} ({len(df)} rows, columns {list(df.columns)};"
                         f" meta: {meta['rows']} rows, columns {meta['columns']}): one of them was replaced alone")
    return df, meta
