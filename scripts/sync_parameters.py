#!/usr/bin/env python
"""Write each notebook's papermill `parameters` cell from its config class (nbhelpers.config.NOTEBOOK_CONFIGS).

The config classes are the one declaration of every parameter (name, type, default, help); this script copies
them into the notebooks so papermill and readers see them. `--check` only reports differences (exit 1), which
is what the test suite runs.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

from nbhelpers.config import NOTEBOOK_CONFIGS, cli_parser, parameters_cell

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def parameters_cell_of(nb: nbformat.NotebookNode, path: Path) -> nbformat.NotebookNode:
    """The one cell tagged `parameters` of a notebook."""
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise SystemExit(f"{path.name}: expected exactly one cell tagged 'parameters', found {len(cells)}")
    return cells[0]


def build_parser() -> argparse.ArgumentParser:
    """The command line's parser."""
    ap = cli_parser(__doc__.splitlines()[0], prog="scripts/sync_parameters.py")
    ap.add_argument("--check", action="store_true", help="report notebooks whose cell differs; change nothing")
    return ap


def main(argv: list[str] | None = None) -> int:
    """Write (or --check) every notebook's parameters cell from its config class."""
    args = build_parser().parse_args(argv)
    stale = []
    for stem, cls in NOTEBOOK_CONFIGS.items():
        path = NOTEBOOKS / f"{stem}.ipynb"
        nb = nbformat.read(path, as_version=4)
        cell = parameters_cell_of(nb, path)
        wanted = parameters_cell(cls)
        if cell.source != wanted:
            stale.append(path.name)
            if not args.check:
                cell.source = wanted
                nbformat.write(nb, path)
    verb = "differ from their configs" if args.check else "updated"
    print(f"{len(stale)} parameters cell(s) {verb}: {stale}" if stale else "every parameters cell matches its config")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
