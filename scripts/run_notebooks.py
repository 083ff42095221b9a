#!/usr/bin/env python
"""Execute every numbered notebook with papermill (the README's `make reproduce`).

With no `-p` parameters (the default run) each executed notebook replaces its source in notebooks/, so the
notebooks a reader opens show the outputs of the default run (volatile metadata stripped, cell ids stable).
With parameters, executed copies go to notebooks/executed/ (ignored by git). Parameter names are checked
against each notebook's parameters cell before anything runs; values are Python literals, else strings.
`--only 01 02` runs a subset. Progress: one line per notebook with elapsed time and an estimate of what is
left (from the last measured run, notebooks/.timings.json), and papermill's bar over each notebook's cells.
"""
from __future__ import annotations

import argparse
import ast
import json
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
import time
from pathlib import Path

import nbformat
import papermill as pm

from nbhelpers.config import NOTEBOOK_CONFIGS, ConfigError, cli_parser
from nbhelpers.utils import PROGRESS_ENV

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
TIMINGS = NOTEBOOKS / ".timings.json"
VOLATILE_PAPERMILL_KEYS = ("start_time", "end_time", "duration", "exception", "input_path", "output_path",
                           "environment_variables", "version")


def parse_value(text: str) -> object:
    """'4' -> 4, '[1, 2]' -> [1, 2], 'mini' -> 'mini'."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def unknown_parameters(notebooks: list[Path], params: dict) -> list[str]:
    """One message per notebook that does not declare some of params (empty list: all known)."""
    problems = []
    for nb in notebooks:
        known = set(pm.inspect_notebook(str(nb)))
        bad = sorted(set(params) - known)
        if bad:
            problems.append(f"{nb.name} does not take parameter(s) {bad}; valid: {sorted(known)}")
    return problems


def final_frames(text: str) -> str:
    """A stream's text as a terminal shows it at the end: each line's last carriage-return frame (a text progress
    bar's final state), lines a bar cleared (leave=False) dropped."""
    lines = []
    for line in text.split("\n"):
        last = line.split("\r")[-1]
        if "\r" in line and not last.strip():
            continue
        lines.append(last)
    return "\n".join(lines)


def strip_volatile(path: Path) -> None:
    """Remove run-to-run noise from an executed notebook (timestamps, durations, paths) so diffs stay readable, and
    keep each text progress bar's final frame only."""
    nb = nbformat.read(path, as_version=4)
    meta = nb.metadata.get("papermill", {})
    for key in VOLATILE_PAPERMILL_KEYS:
        meta.pop(key, None)
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell.outputs = coalesce_streams(cell.outputs)
    nbformat.write(nb, path)


def coalesce_streams(outputs: list) -> list:
    """Consecutive outputs of one stream merged into one (as a Jupyter front end shows them), each reduced to what
    a terminal shows at the end (final_frames); outputs that end up empty dropped."""
    merged: list = []
    for out in outputs:
        if (out.get("output_type") == "stream" and merged and merged[-1].get("output_type") == "stream"
                and merged[-1].get("name") == out.get("name")):
            merged[-1]["text"] += out["text"]
        else:
            merged.append(out)
    for out in merged:
        if out.get("output_type") == "stream":
            out["text"] = final_frames(out["text"])
    return [o for o in merged if o.get("output_type") != "stream" or o["text"].strip()]


def execute_one(notebook: Path, out: Path, params: dict) -> None:
    """papermill on one notebook, with text progress bars in its kernel (a stored widget shows only its first
    frame, "0/200", to a later reader). main runs each call in a fresh process: one client process driving a
    second kernel after a first notebook's text bars hung, waiting for a reply its kernel had sent."""
    os.environ[PROGRESS_ENV] = "text"
    pm.execute_notebook(str(notebook), str(out), parameters=params, cwd=str(NOTEBOOKS), progress_bar=True,
                        kernel_name="python3")


def _fmt(seconds: float) -> str:
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def parameter_problems(notebooks: list[Path], params: dict) -> list[str]:
    """One message per notebook whose config refuses params (a wrong type or value), checked without data or
    weights: the same validation a notebook's validation cell runs (nbhelpers.config.NOTEBOOK_CONFIGS)."""
    problems = []
    for nb in notebooks:
        cls = NOTEBOOK_CONFIGS[nb.stem]
        try:
            cls.from_params(**{k: v for k, v in params.items() if k in cls.field_names()})
        except ConfigError as err:
            problems.append(f"{nb.name}: {err}")
    return problems


def select(notebooks: list[Path], only: list[str] | None) -> list[Path]:
    """The notebooks whose number prefix is in only (all when only is None); an unknown prefix is a ValueError
    naming the valid ones."""
    if only is None:
        return notebooks
    valid = [nb.name[:2] for nb in notebooks]
    unknown = [o for o in only if o not in valid]
    if not only:
        raise ValueError(f"--only needs notebook numbers; valid: {valid}")
    if unknown:
        raise ValueError(f"--only: no notebook numbered {unknown}; valid: {valid} "
                         f"({', '.join(nb.stem for nb in notebooks)})")
    return [nb for nb in notebooks if nb.name[:2] in only]


def build_parser() -> argparse.ArgumentParser:
    """The command line's parser."""
    ap = cli_parser(__doc__.splitlines()[0], prog="scripts/run_notebooks.py")
    ap.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="a notebook parameter (a Python literal, else a string), as papermill's -p; repeatable")
    ap.add_argument("--only", nargs="*", default=None, help="notebook number prefixes, e.g. 01 03 (default: all)")
    ap.add_argument("--out-dir", default=None, help="where executed notebooks go (default: in place without "
                                                     "parameters, notebooks/executed/ with parameters)")
    ap.add_argument("--dry-run", action="store_true",
                    help="check the notebooks and every parameter (names, types, values), then stop: run nothing")
    return ap


def main(argv: list[str] | None = None) -> int:
    """Execute the selected notebooks, after checking every parameter against each notebook."""
    args = build_parser().parse_args(argv)
    params = {k: parse_value(v) for k, v in args.parameter}
    try:
        notebooks = select(sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")), args.only)
    except ValueError as err:
        print(err, file=sys.stderr)
        return 2
    problems = unknown_parameters(notebooks, params) or parameter_problems(notebooks, params)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 2
    if args.dry_run:
        print(f"{len(notebooks)} notebook(s) take these parameters: {', '.join(nb.stem for nb in notebooks)}")
        return 0
    in_place = args.out_dir is None and not params
    out_dir = NOTEBOOKS if in_place else Path(args.out_dir or NOTEBOOKS / "executed")
    out_dir.mkdir(parents=True, exist_ok=True)
    timings = json.loads(TIMINGS.read_text()) if TIMINGS.is_file() else {}
    total = time.time()
    for i, nb in enumerate(notebooks):
        left = sum(timings.get(n.stem, 0.0) for n in notebooks[i:])
        print(f"== [{i + 1}/{len(notebooks)}] {nb.name} {params or ''} | elapsed {_fmt(time.time() - total)}"
              + (f" | about {_fmt(left)} left (last run's times)" if left else ""), flush=True)
        t0 = time.time()
        target = out_dir / nb.name
        tmp = target.with_name(f".{nb.stem}.running.ipynb")
        with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
            pool.submit(execute_one, nb, tmp, params).result()
        strip_volatile(tmp)
        tmp.replace(target)
        seconds = time.time() - t0
        print(f"   {nb.name} done in {_fmt(seconds)}", flush=True)
        if in_place:
            timings[nb.stem] = round(seconds, 1)
            TIMINGS.write_text(json.dumps(timings, indent=1, sort_keys=True) + "\n")
    print(f"all {len(notebooks)} notebooks in {_fmt(time.time() - total)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
