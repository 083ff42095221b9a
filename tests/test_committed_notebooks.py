"""The notebooks a reader opens are the executed default run, and what they show agrees with results/."""
from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _findings_cell(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    cells = [c for c in nb.cells if "findings" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, "exactly one cell tagged 'findings'"
    return cells[0]


def _text(cell: nbformat.NotebookNode) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            parts.append(out.get("text", ""))
        else:
            parts.append(out.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_is_the_executed_default_run(notebook):
    nb = nbformat.read(notebook, as_version=4)
    assert nb.metadata.get("papermill", {}).get("parameters") == {}, "executed with non-default parameters"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code), "every code cell was executed"
    assert not any(o.get("output_type") == "error" for c in code for o in c.outputs)
    assert any("image/png" in o.get("data", {}) for c in code for o in c.outputs), "figures are shown"
    assert len({c.id for c in nb.cells}) == len(nb.cells), "cell ids are unique and stable"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_findings_shown_equal_the_committed_findings_file(notebook):
    nb = nbformat.read(notebook, as_version=4)
    shown = _text(_findings_cell(nb))
    stored = json.loads((ROOT / "results" / f"{notebook.stem[:2]}_findings.json").read_text())
    assert stored["findings"], "at least one finding"
    for finding in stored["findings"]:
        assert finding["id"] in shown and f"[{finding['verdict'].upper()}] {finding['id']}" in shown and finding["ours"] in shown, finding["id"]
