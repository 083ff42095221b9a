"""Every parameter is declared once: what papermill reads from each notebook equals its config class, and
unknown names are refused (by the notebook itself and by scripts/run_notebooks.py) before any work."""
from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import papermill as pm
import pytest

from nbhelpers import config, utils

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_every_notebook_has_a_config():
    assert {nb.stem for nb in NOTEBOOKS} == set(config.NOTEBOOK_CONFIGS)


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_papermill_names_and_defaults_equal_the_config(notebook):
    read = pm.inspect_notebook(str(notebook))
    cls = config.NOTEBOOK_CONFIGS[notebook.stem]
    assert sorted(read) == sorted(cls.field_names())
    defaults = cls.defaults()
    for name, spec in read.items():
        assert ast.literal_eval(spec["default"]) == defaults[name], name
        assert spec["help"], f"{name} has no help text"


def test_sync_script_reports_a_drifted_cell(tmp_path, monkeypatch):
    import nbformat

    sys.path.insert(0, str(ROOT / "scripts"))
    import sync_parameters

    copy = tmp_path / "notebooks"
    copy.mkdir()
    for nb in NOTEBOOKS:
        (copy / nb.name).write_bytes(nb.read_bytes())
    monkeypatch.setattr(sync_parameters, "NOTEBOOKS", copy)
    assert sync_parameters.main(["--check"]) == 0
    nb = nbformat.read(copy / "02_margin_vs_similarity.ipynb", as_version=4)
    cell = sync_parameters.parameters_cell_of(nb, copy / "02_margin_vs_similarity.ipynb")
    cell.source = cell.source.replace("n_samples: int = 2048", "n_samples: int = 1024")
    nbformat.write(nb, copy / "02_margin_vs_similarity.ipynb")
    assert sync_parameters.main(["--check"]) == 1
    assert sync_parameters.main([]) == 0 and sync_parameters.main(["--check"]) == 0


def test_from_namespace_refuses_unknown_names_and_lists_the_valid_ones():
    ns = {"profile": "mini", "dataset": "cifar10", "In": [], "_": None, "pd": pytest, "display": print}
    with pytest.raises(config.ConfigError, match=r"unknown parameter\(s\) \['dataset'\].*valid parameters"):
        config.IATNotebookConfig.from_namespace(ns)
    cfg = config.MarginOffsetConfig.from_namespace({"eps": 8.0, "In": [], "pd": pytest})
    assert cfg.eps == 8.0 and cfg.n_samples == config.MarginOffsetConfig.defaults()["n_samples"]


def test_shared_knobs_have_one_default_for_notebooks_and_cli():
    """The training CLI and notebooks 04/05 build the same TAI run from their defaults."""
    cli = config.FinetuneConfig(method="tai")
    for nb_cfg in (config.TAINotebookConfig(), config.EvaluationConfig()):
        assert nb_cfg.finetune_config("tai") == cli


def test_run_notebooks_refuses_unknown_parameter_before_any_work(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "run_notebooks.py"), "--only", "03",
                           "-p", "dataset", "cifar10", "--out-dir", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "03_iat.ipynb does not take parameter(s) ['dataset']" in proc.stderr
    assert "valid:" in proc.stderr and "datasets" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_a_help_with_an_equals_sign_is_refused_and_check_catches_a_line_papermill_drops(tmp_path, monkeypatch):
    """papermill silently drops a parameters-cell line whose comment or value holds another "=": a knob's help may
    not hold one (refused where it is declared), and sync_parameters (--check or not) fails on any parameter papermill
    would not read back, writing nothing."""
    import dataclasses

    sys.path.insert(0, str(ROOT / "scripts"))
    import sync_parameters

    with pytest.raises(ValueError, match="papermill"):
        config.knob(1, "1 = on")

    @dataclasses.dataclass(frozen=True)
    class WithOddDefault(config.AnalysisConfig):
        label: str = config.knob("a=b", "a label whose default holds an equals sign")

    copy = tmp_path / "notebooks"
    copy.mkdir()
    path = copy / "02_margin_vs_similarity.ipynb"
    path.write_bytes((ROOT / "notebooks" / path.name).read_bytes())
    before = path.read_bytes()
    monkeypatch.setattr(sync_parameters, "NOTEBOOKS", copy)
    monkeypatch.setattr(sync_parameters, "NOTEBOOK_CONFIGS", {path.stem: WithOddDefault})
    assert sync_parameters.dropped_by_papermill(config.parameters_cell(WithOddDefault),
                                                WithOddDefault.field_names()) == ["label"]
    assert sync_parameters.main(["--check"]) == 2 and sync_parameters.main([]) == 2
    assert path.read_bytes() == before
    monkeypatch.setattr(sync_parameters, "NOTEBOOK_CONFIGS", {path.stem: config.AnalysisConfig})
    assert sync_parameters.main(["--check"]) == 0  # the declared config reads back whole


def test_rendered_progress_bars_keep_their_final_frame_only(monkeypatch):
    """scripts/run_notebooks.py renders with text bars (TIMA_PROGRESS=text) and keeps each bar's last frame, dropping
    the lines a bar cleared (leave=False), so the committed notebook reads like the end of a terminal session."""
    spec = importlib.util.spec_from_file_location("run_notebooks", ROOT / "scripts" / "run_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.final_frames("a\n  0%|  | 0/200\r 50%| | 100/200\r100%|#| 200/200\nb\n") == "a\n100%|#| 200/200\nb\n"
    assert module.final_frames("inner 0/5\rinner 5/5\r         \r\ndone\n") == "done\n"
    assert module.final_frames("no bar here\n") == "no bar here\n"
    frames = [{"output_type": "stream", "name": "stderr", "text": f"\rbar {i}/2"} for i in range(3)]
    outputs = [{"output_type": "stream", "name": "stdout", "text": "hello\n"}, *frames,
               {"output_type": "stream", "name": "stderr", "text": "\n"}, {"output_type": "display_data", "data": {}}]
    tidy = module.coalesce_streams(outputs)
    assert [o.get("text") for o in tidy] == ["hello\n", "bar 2/2\n", None]  # one bar, its last frame
    monkeypatch.setenv(utils.PROGRESS_ENV, "text")
    assert type(utils.progress_bar(range(2), disable=True)).__module__ == "tqdm.std"
    monkeypatch.setenv(utils.PROGRESS_ENV, "widgets")
    with pytest.raises(ValueError, match="TIMA_PROGRESS"):
        utils.progress_bar(range(2))
