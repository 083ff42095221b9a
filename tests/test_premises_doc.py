"""docs/WORLD2_PREMISES.md (issue 32, item 1): the criteria a second world must meet, committed before that world
exists. The numbers it quotes from this repository are the repository's."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import torch

from nbhelpers import analysis, premises, world
from script_modules import load_script

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "WORLD2_PREMISES.md"


def _text() -> str:
    return " ".join(DOC.read_text().split())


def test_premises_are_declared_with_a_verdict_for_a_failed_premise():
    text = _text()
    assert "before the second world exists" in text and "## Deviations" in text
    premises = sorted(set(re.findall(r"\*\*(P\d)\. ", text)))
    assert premises == [f"P{i}" for i in range(1, 8)]
    assert text.count('"not testable here"') >= 5  # a failed premise's verdict, never "not reproduced"


def test_the_mini_world_values_it_quotes_are_the_committed_ones():
    """Section 1's calibration line: mean pairwise cosine of each zero-shot task's original class text
    (results/03_text_structure.csv), the tasks' class counts and the fine-tuning task's."""
    text = _text()
    table = pd.read_csv(ROOT / "results" / "03_text_structure.csv")
    cosine = table[table.text == "original"].set_index("dataset").mean_cosine
    for task in ("shapes", "colours", "patterns", "objects", "colour_patterns"):
        assert f"{task} {cosine[task]:.2f}" in text, task
    assert f"Fine-tuning task `{world.FINETUNE_TASK}`: {len(world.task_spec(world.FINETUNE_TASK).classnames())} classes" in text
    assert len(world.task_spec("objects").classnames()) == 80 and "objects 0.16 (80 classes)" in text
    assert "colour_patterns 0.27 (60 classes)" in text
    assert len(world.task_spec("colour_patterns").classnames()) == 60
    assert f"{len(world.task_spec(world.FINETUNE_TASK).classnames())} -> fails" in text  # P1 on the mini world


def test_the_published_numbers_it_quotes_are_in_the_published_table():
    text = _text()
    published = pd.read_csv(ROOT / "nbhelpers" / "published" / "published_results.csv")
    clip = published[(published.method == "CLIP") & published.source.str.startswith("PMG-AFT")
                     & (published.dataset == "average")].set_index("table").value
    assert f"{clip['Table 1']:.2f} / {clip['Table 2']:.2f}" in text  # R6: robust / clean of CLIP ViT-B/32


def test_crowding_statistics_on_embeddings_whose_answer_is_known():
    stats = analysis.text_crowding_stats(torch.eye(4, 8))  # orthogonal classes: nothing crowded
    assert stats["mean_cosine"] == 0 and stats["nn_cosine"] == 0 and stats["cosine_std"] == 0
    assert math.isclose(stats["min_distance"], math.sqrt(2)) and stats["classes"] == 4
    pair = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 3.0]])  # two identical classes, one orthogonal (unnormalised)
    stats = analysis.text_crowding_stats(pair)
    assert math.isclose(stats["mean_cosine"], 1 / 3) and math.isclose(stats["nn_cosine"], 2 / 3)
    assert stats["min_distance"] == 0


def test_the_premise_script_agrees_with_03_and_reads_an_embeddings_file(tmp_path, capsys):
    text_premises = load_script("text_premises")
    assert text_premises.main([]) == 0
    rows = {r["task"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    table = pd.read_csv(ROOT / "results" / "03_text_structure.csv")
    committed = table[table.text == "original"].set_index("dataset")
    for task in world.ZERO_SHOT_TASKS:  # the same embeddings 03 measured
        assert abs(rows[task]["mean_cosine"] - committed.mean_cosine[task]) < 1e-3
        assert abs(rows[task]["min_distance"] - committed.min_distance[task]) < 1e-3
    assert rows[world.FINETUNE_TASK]["classes"] == len(world.task_spec(world.FINETUNE_TASK).classnames())
    np.save(tmp_path / "e.npy", np.eye(3, 5, dtype=np.float32))
    assert text_premises.main(["--embeddings", str(tmp_path / "e.npy")]) == 0
    assert json.loads(capsys.readouterr().out)["mean_cosine"] == 0
    np.save(tmp_path / "flat.npy", np.ones(5))
    assert text_premises.main(["--embeddings", str(tmp_path / "flat.npy")]) == 2
    assert "(C, D)" in capsys.readouterr().err


def test_the_code_holds_the_documents_thresholds():
    """premises.THRESHOLDS is docs/WORLD2_PREMISES.md's section 2, number for number."""
    t, text = premises.THRESHOLDS, _text()
    for phrase in (f"**>= {t.finetune_classes} classes**", f"mean pairwise cosine **>= {t.mean_cosine:.2f}**",
                   f"mean NN cosine **>= {t.nn_cosine:.2f}**", f"at least **{t.large_tasks}** zero-shot tasks with "
                   f"**>= {t.large_task_classes}** classes", f"**>= {t.auc:.2f}**", f"Spearman(text cosine, ground "
                   f"truth) **>= {t.spearman:.2f}**", f"std of pairwise cosine **>= {t.spread:.2f}**",
                   f"**[{t.attack_ratio[0]:.2f}, {t.attack_ratio[1]:.2f}]**", f"**>= {t.patch_tokens} patch tokens**",
                   f"with >= {t.crowd_task_classes} classes"):
        assert phrase in text, phrase


def test_judging_the_premises_on_known_worlds():
    def stats(role: str, task: str, classes: int, mean: float, nn: float, auc: float = 0.9) -> dict:
        return {"task": task, "role": role, "classes": classes, "mean_cosine": mean, "nn_cosine": nn,
                "cosine_std": 0.1, "cosine_p90_p50": 0.1, "auc": auc, "spearman": float("nan")}

    crowded = pd.DataFrame([stats("finetune", "ft", 200, 0.7, 0.85),
                            *[stats("test", f"big{i}", 100, 0.6, 0.8) for i in range(3)],
                            stats("test", "small", 10, 0.1, 0.2)])  # a small task is not judged for crowding
    vit = {"tower": "VisionTransformer", "patch_tokens": 49}
    verdicts = premises.judge_premises(crowded, tower=vit, robust_ratio=0.3).set_index("premise").verdict
    assert (verdicts == premises.HOLDS).all()
    claims = premises.testable_claims(verdicts.reset_index())
    assert claims.set_index("claim").status["IAT spreads crowded class texts"] == "testable"
    assert claims.set_index("claim").status["IAT helps robustness"] == "premises not all measured here"  # P4: 03
    sparse = crowded.assign(mean_cosine=lambda d: d.mean_cosine.where(d.task != "big0", 0.2))
    verdicts = premises.judge_premises(sparse, tower={"tower": "ModifiedResNet", "patch_tokens": 0},
                                       robust_ratio=None).set_index("premise").verdict
    assert verdicts["P2"] == premises.FAILS and verdicts["P7"] == premises.FAILS and verdicts["P6"] == premises.UNCLEAR
    status = premises.testable_claims(verdicts.reset_index()).set_index("claim").status
    assert status["IAT spreads crowded class texts"] == "not testable here"
    assert status["finding 1: stable margin offset"] == "premises not all measured here"


def test_ground_truth_and_attack_ratio_helpers():
    truth = premises.shared_attributes("objects")  # colour x shape: a pair shares one attribute or none
    assert len(truth) == 80 * 79 // 2 and set(truth) == {0, 1}
    assert (truth == 1).sum() == 80 * (9 + 7) // 2  # each class: 9 others of its shape, 7 of its colour
    emb = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    agree = premises.ground_truth_agreement(emb, np.array([1, 0, 0]))  # the close pair is the one that shares
    assert agree["auc"] == 1 and math.isnan(agree["spearman"])
    grid = pd.DataFrame({"task": ["a", "a", "b", "b"], "eps": [0.0, 1.0, 0.0, 1.0], "accuracy": [0.8, 0.4, 0.5, 0.1]})
    assert math.isclose(premises.attack_ratio(grid), (0.5 + 0.2) / 2)
    assert premises.attack_ratio(grid, eps=4.0) is None


def test_00_says_which_premises_hold_as_its_table_does():
    verdicts = pd.read_csv(ROOT / "results" / "00_premises.csv").set_index("premise").verdict
    assert set(verdicts[verdicts == premises.HOLDS].index) == {"P3", "P5"}
    assert set(verdicts[verdicts == premises.FAILS].index) == {"P1", "P2", "P6", "P7"}
    nb = nbformat.read(ROOT / "notebooks" / "00_mini_world.ipynb", as_version=4)
    prose = " ".join(" ".join(c.source.split()) for c in nb.cells if c.cell_type == "markdown")
    assert "P3 and P5 hold" in prose and "P1 (the fine-tuning task" in prose and "P7 (a ResNet image tower) fail" in prose
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert "meets the two that finding 2 needs and fails the others" in readme  # P3, P5 hold; P1, P2, P6, P7 fail
    findings_doc = " ".join((ROOT / "docs" / "FINDINGS.md").read_text().split())
    assert "The two that finding 2 needs hold" in findings_doc and "The others fail" in findings_doc
    assert set(premises.CLAIMS["finding 2: margin vs inter-class text similarity"]) == {"P3", "P5"}
