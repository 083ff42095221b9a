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
import sys
import time
from pathlib import Path

import nbformat
import papermill as pm

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


def strip_volatile(path: Path) -> None:
    """Remove run-to-run noise from an executed notebook (timestamps, durations, paths) so diffs stay readable."""
    nb = nbformat.read(path, as_version=4)
    meta = nb.metadata.get("papermill", {})
    for key in VOLATILE_PAPERMILL_KEYS:
        meta.pop(key, None)
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
    nbformat.write(nb, path)


def _fmt(seconds: float) -> str:
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    ap.add_argument("--only", nargs="*", default=None, help="notebook number prefixes, e.g. 01 03")
    ap.add_argument("--out-dir", default=None, help="where executed notebooks go (default: in place without "
                                                     "parameters, notebooks/executed/ with parameters)")
    args = ap.parse_args(argv)
    params = {k: parse_value(v) for k, v in args.parameter}
    notebooks = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if args.only:
        notebooks = [nb for nb in notebooks if nb.name[:2] in args.only]
    problems = unknown_parameters(notebooks, params)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 2
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
        pm.execute_notebook(str(nb), str(tmp), parameters=params, cwd=str(NOTEBOOKS), progress_bar=True,
                            kernel_name="python3")
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
