#!/usr/bin/env python
"""Execute every numbered notebook with papermill on its default parameters (the README's main command).

Executed copies go to notebooks/executed/; the notebooks themselves write figures/ and results/.
Extra parameters apply to every notebook: `-p profile paper -p data_root /data` (values parsed as Python
literals, else strings). `--only 01 02` runs a subset.
"""
from __future__ import annotations

import argparse
import ast
import sys
import time
from pathlib import Path

import papermill as pm

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"


def parse_value(text: str) -> object:
    """'4' -> 4, '[1, 2]' -> [1, 2], 'mini' -> 'mini'."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    ap.add_argument("--only", nargs="*", default=None, help="notebook number prefixes, e.g. 01 03")
    ap.add_argument("--out-dir", default=str(NOTEBOOKS / "executed"))
    args = ap.parse_args(argv)
    params = {k: parse_value(v) for k, v in args.parameter}
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    notebooks = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if args.only:
        notebooks = [nb for nb in notebooks if nb.name[:2] in args.only]
    total = time.time()
    for nb in notebooks:
        t0 = time.time()
        print(f"== {nb.name} {params or ''}", flush=True)
        pm.execute_notebook(str(nb), str(out_dir / nb.name), parameters=params, cwd=str(NOTEBOOKS),
                            progress_bar=False, kernel_name="python3")
        print(f"   done in {time.time() - t0:.0f} s", flush=True)
    print(f"all {len(notebooks)} notebooks in {time.time() - total:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
