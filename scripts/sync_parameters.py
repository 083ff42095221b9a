#!/usr/bin/env python
"""Write each notebook's papermill `parameters` cell from its config class (nbhelpers.config.NOTEBOOK_CONFIGS).

The config classes are the one declaration of every parameter (name, type, default, help); this script copies
them into the notebooks so papermill and readers see them. `--check` only reports differences (exit 1), which
is what the test suite runs. Either way every cell is first read back through papermill: a parameter papermill
would drop (a line it cannot parse) is an error (exit 2) and nothing is written.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
from papermill.translators import PythonTranslator

from nbhelpers.config import NOTEBOOK_CONFIGS, cli_parser, parameters_cell

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def parameters_cell_of(nb: nbformat.NotebookNode, path: Path) -> nbformat.NotebookNode:
    """The one cell tagged `parameters` of a notebook."""
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise SystemExit(f"{path.name}: expected exactly one cell tagged 'parameters', found {len(cells)}")
    return cells[0]


def dropped_by_papermill(source: str, names: list[str]) -> list[str]:
    """The parameters of `names` that papermill does not read back from a parameters cell's source (a line it
    cannot parse, e.g. one whose help or value holds another "=", is dropped without an error)."""
    cell = nbformat.v4.new_code_cell(source)
    read = {p.name for p in PythonTranslator.inspect(cell)}
    return [n for n in names if n not in read]


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
        dropped = dropped_by_papermill(wanted, cls.field_names())
        if dropped:  # an error in both modes: writing such a cell would hide these parameters from papermill
            print(f"{path.name}: papermill would drop parameter(s) {dropped} of {cls.__name__} (a line it cannot "
                  "parse: its help or value holds another '='); change their declaration in nbhelpers/config.py")
            return 2
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
