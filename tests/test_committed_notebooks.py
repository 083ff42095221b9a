"""The notebooks a reader opens are the executed default run, and what they show agrees with results/."""
from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from nbhelpers import study

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


NUMBER_IN_PROSE = re.compile(r"[+\-\u2212]\d+\.\d+|\d+\.\d+\s*(\[|%|points?\b)|\[\s*[+\-\u2212]?\d+(\.\d+)?\s*,")


def test_06_markdown_types_no_result_numbers_and_its_verdicts_equal_the_findings_file():
    """Issue 22: 06's prose holds no hand-typed result (no interval, no signed difference, no percentage with
    decimals: those are rendered from the stores in code cells), and every verdict its text names with a finding id
    is the one results/06_findings.json holds."""
    nb = nbformat.read(ROOT / "notebooks" / "06_study.ipynb", as_version=4)
    prose = [c.source for c in nb.cells if c.cell_type == "markdown"]
    typed = [m.group(0) for text in prose for m in NUMBER_IN_PROSE.finditer(text)]
    assert not typed, f"hand-typed result numbers in 06's markdown: {typed}"
    stored = {f["id"]: f["verdict"] for f in
              json.loads((ROOT / "results" / "06_findings.json").read_text())["findings"]}
    named = dict(re.findall(r"`(06_[a-z0-9_]+)` \u2014 \*([a-z ]+)\*", "\n".join(prose)))
    assert set(named) == set(stored), "the text names every 06 finding once, with its verdict"
    assert named == stored


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_prose_after_the_findings_names_every_verdict_as_stored(notebook):
    """Issue 22: after each findings cell a markdown cell says what the result shows, naming every finding of the
    notebook with the verdict results/NN_findings.json holds (so the prose cannot drift from the verdicts), and
    types no result number (intervals, signed or percent decimals: the findings output above it has them)."""
    nb = nbformat.read(notebook, as_version=4)
    idx = next(i for i, c in enumerate(nb.cells) if "findings" in c.get("metadata", {}).get("tags", []))
    after = [c for c in nb.cells[idx + 1:] if c.cell_type == "markdown" and "What the findings show" in c.source]
    assert len(after) == 1, "one 'What the findings show' cell after the findings cell"
    typed = [m.group(0) for m in NUMBER_IN_PROSE.finditer(after[0].source)]
    assert not typed, f"hand-typed result numbers: {typed}"
    stored = {f["id"]: f["verdict"] for f in
              json.loads((ROOT / "results" / f"{notebook.stem[:2]}_findings.json").read_text())["findings"]}
    named = dict(re.findall(r"`(\d\d_[a-z0-9_]+)` \u2014 \*([a-z ]+)\*", after[0].source))
    assert named == stored


ABSOLUTE_PATH = re.compile(r"PosixPath\(|(?<![\w.~])/(tmp|home|work|root|Users|private|var)/")


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_outputs_read_the_same_on_any_machine(notebook):
    """Issue 29: no output names a folder of the machine that rendered it, and progress bars are stored as their
    final text frame (a stored widget shows only its first frame, "0/200", to a later reader; 01's interactive
    explorer stays a widget, with its figure beside it)."""
    nb = nbformat.read(notebook, as_version=4)
    for i, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
        for out in cell.outputs:
            text = out.get("text", "") if out.get("output_type") == "stream" else out.get("data", {}).get("text/plain", "")
            widget = "application/vnd.jupyter.widget-view+json" in out.get("data", {})
            assert not (widget and "%|" in text), f"code cell {i}: a progress bar stored as a widget: {text[:80]!r}"
            assert not ABSOLUTE_PATH.search(text), f"code cell {i} shows a machine's path: {text[:200]!r}"
            assert "\r" not in text, f"code cell {i} keeps every frame of a progress bar"


def test_06_prose_on_pmg_aft_as_released_holds_on_its_tables():
    """06's paragraph on pmg_aft_code (PMG-AFT as its released code runs it), the README's and FINDINGS.md's say
    what results/ holds: its pick at
    the top of the learning-rate grid, round 2's larger alpha = beta all below the clean floor, less robust than
    pmg_aft at every radius and less accurate on clean images, never the most robust baseline, and a
    PGD-minus-APGD gap within the range of the other methods'."""
    nb = nbformat.read(ROOT / "notebooks" / "06_study.ipynb", as_version=4)
    assert any(c.cell_type == "markdown" and c.source.startswith("**PMG-AFT as its released code runs it**")
               for c in nb.cells)
    selected = json.loads((ROOT / "results" / "06_selected.json").read_text())["selected"]
    assert selected["pmg_aft_code"]["finetune_lr"] == max(study.LR_GRID["mini"])
    assert selected["pmg_aft_code"] == {"finetune_lr": 1e-3, "pmg_alpha": 2.0, "pmg_beta": 2.0}  # docs/FINDINGS.md
    assert "less robust than `pmg_aft` at every radius" in " ".join((ROOT / "README.md").read_text().split())
    search = pd.read_csv(ROOT / "results" / "06_confirmatory_search.csv")
    round2 = search[(search.method == "pmg_aft_code") & (search["round"] == 2)]
    assert len(round2) == 3 and not round2.eligible.any()
    summary = pd.read_csv(ROOT / "results" / "06_seed_summary.csv").set_index(["method", "metric"])["mean"]
    radii = [m for m in summary.loc["pmg_aft"].index if m.startswith("robust@") and "/" not in m]
    assert len(radii) == 4 and summary["pmg_aft_code", "clean"] < summary["pmg_aft", "clean"]
    for metric in radii:
        assert summary["pmg_aft_code", metric] < summary["pmg_aft", metric]
        assert summary["pmg_aft_code", metric] < max(summary[b, metric] for b in study.baselines())
    gaps = pd.read_csv(ROOT / "results" / "06_strong_gaps.csv").set_index("method").gap
    others = gaps.drop("pmg_aft_code")
    assert others.min() - 1 <= gaps["pmg_aft_code"] <= others.max() + 1  # "about as much as the others"
