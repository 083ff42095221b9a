"""The scoreboard (issue 35): every released format scored through the one command on random weights and the paper
fixtures, the store keyed and resumable, bad input refused before any work, the tables' intervals and gap flag.

The model is a random-weight open_clip ViT at 224 px (tiny width: the structure of ViT-B-32), written in each
peer's exact file structure by the writers of tests/test_checkpoints.py; the data is the CIFAR-10 fixture of
tests/paper_fixtures.py. Attacks are cut to a few steps (pgd2, the reduced aa1): the code path is the real one.
"""
from __future__ import annotations

import json

import numpy as np
import open_clip
import pandas as pd
import pytest
import torch

from nbhelpers import models, paper_data, score, suite
from nbhelpers.config import ConfigError, ScoreboardConfig, ScoreConfig
from nbhelpers.utils import file_fingerprint, pack_mask
from paper_fixtures import write_fixture
from test_checkpoints import write_agft, write_full, write_image_tower, write_tecoa_family

TINY = "tiny-vit-score-test"
CONFIG = {"embed_dim": 32, "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "patch_size": 32},
          "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 2}}
WIDE = {**CONFIG, "vision_cfg": {**CONFIG["vision_cfg"], "width": 96}}


@pytest.fixture(autouse=True)
def _fixture_checksums(monkeypatch):
    """The fixtures' files are not the real ones: their checksums are not checked (paper_data.SKIP_CHECKSUMS_ENV)."""
    monkeypatch.setenv(paper_data.SKIP_CHECKSUMS_ENV, "1")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The tiny architectures registered, a base CLIP file, the CIFAR-10 fixture, and one file per format."""
    root = tmp_path_factory.mktemp("score")
    (root / "configs").mkdir()
    (root / "configs" / f"{TINY}.json").write_text(json.dumps(CONFIG))
    (root / "configs" / f"{TINY}-wide.json").write_text(json.dumps(WIDE))
    open_clip.add_model_config(root / "configs")
    torch.manual_seed(0)
    base = root / "base.safetensors"
    write_full(base, models.build_open_clip(TINY, pretrained="none", quick_gelu=True).clip, style="safetensors")
    write_fixture("cifar10", root / "data")
    files = {}
    for i, fmt in enumerate(["tecoa_family", "agft", "image_tower", "open_clip_full"]):
        torch.manual_seed(10 + i)
        clip = models.build_open_clip(TINY, pretrained="none", quick_gelu=True).clip
        path = root / f"{fmt}.pt"
        {"tecoa_family": lambda: write_tecoa_family(path, clip.visual, peer="tecoa"),
         "agft": lambda: write_agft(path, clip.visual, dtype=torch.float16),
         "image_tower": lambda: write_image_tower(path, clip.visual),
         "open_clip_full": lambda: write_full(path, clip, style="dataparallel")}[fmt]()
        files[fmt] = path
    torch.manual_seed(20)
    wide = models.build_open_clip(f"{TINY}-wide", pretrained="none", quick_gelu=True).clip
    files["wide"] = root / "wide.pt"
    write_image_tower(files["wide"], wide.visual)
    return root, base, files


def command(world, fmt: str, name: str, *extra: str) -> list[str]:
    """The score command's arguments for one file of the fixture world (one dataset, 4 images, tiny attacks)."""
    root, base, files = world
    return ["--checkpoint", str(files[fmt]), "--name", name, "--profile", "paper", "--model", TINY,
            "--pretrained", str(base), "--data_root", str(root / "data"), "--datasets", "cifar10",
            "--n_samples", "4", "--eps_list", "4", "--bootstrap", "50", "--store", str(root / "store.jsonl"), *extra]


def last_json(out: str) -> dict:
    """The command's closing JSON line."""
    return json.loads(out.strip().splitlines()[-1])


def test_every_format_is_scored_by_the_command_and_a_rerun_computes_nothing(world, capsys):
    root, _, files = world
    for fmt in ["tecoa_family", "agft", "image_tower", "open_clip_full"]:
        assert score.main(command(world, fmt, f"{fmt} (random)", "--attacks", "pgd2")) == 0
        done = last_json(capsys.readouterr().out)
        assert done["computed"] == 2 and done["format"] == fmt and done["sha256"] == file_fingerprint(files[fmt])
    rows = score.load_scores(root / "store.jsonl")
    assert len(rows) == 8 and set(rows.checkpoint_format) == {"tecoa_family", "agft", "image_tower", "open_clip_full"}
    assert all(json.loads(n) == json.loads(score.numerics()) for n in rows.numerics)
    assert set(rows.protocol) == {"tecoa"} and (rows.seconds >= 0).all()
    # the same command again computes nothing; another eps and the reduced AutoAttack add rows
    assert score.main(command(world, "tecoa_family", "tecoa_family (random)", "--attacks", "pgd2")) == 0
    assert last_json(capsys.readouterr().out)["computed"] == 0
    assert score.main(command(world, "tecoa_family", "tecoa_family (random)", "--attacks", "pgd2", "aa1",
                              "--eps_list", "1", "4")) == 0
    out = capsys.readouterr().out
    assert last_json(out)["computed"] == 3 and "gap @ 4/255" in out
    assert len(score.load_scores(root / "store.jsonl")) == 11


def test_the_plan_computes_nothing_and_counts_stored_cells(world, capsys):
    root, _, _ = world
    before = (root / "store.jsonl").read_bytes() if (root / "store.jsonl").exists() else b""
    assert score.main(command(world, "image_tower", "image_tower (random)", "--attacks", "pgd2", "aa", "--plan")) == 0
    out = capsys.readouterr().out
    plan = last_json(out)
    assert plan["cells"] == 3 and "AutoAttack (APGD-CE + APGD-T)" in out and plan["device seconds (at most)"] > 0
    after = (root / "store.jsonl").read_bytes() if (root / "store.jsonl").exists() else b""
    assert after == before


@pytest.mark.parametrize("case, message", [
    ("protocol", "parameter 'protocol' = 'nope' is not allowed"),
    ("architecture", "does not fit open_clip"),
    ("dataset", "missing under data_root"),
    ("name", "already on the scoreboard"),
])
def test_bad_input_stops_before_any_work(world, capsys, tmp_path, case, message):
    root, _, files = world
    store = tmp_path / "store.jsonl"
    if case == "name":  # the name taken by another file (another sha256)
        store.write_text(json.dumps({"profile": "paper", "model": suite.released_name("Taken"), "dataset": "cifar10",
                                     "protocol": "tecoa", "sampling": "random", "attack": "clean", "eps": 0.0,
                                     "n_requested": 4, "seed": 0, "checkpoint_sha256": "0" * 64}) + "\n")
    args = {"protocol": command(world, "image_tower", "x", "--protocol", "nope"),
            "architecture": command(world, "wide", "x"),
            "dataset": command(world, "image_tower", "x", "--datasets", "cifar10", "stl10"),
            "name": command(world, "image_tower", "Taken")}[case]
    args[args.index("--store") + 1] = str(store)
    before = store.read_bytes() if store.exists() else None
    with pytest.raises(SystemExit) as exc:
        score.main(args)
    assert exc.value.code == 2 and message in capsys.readouterr().err
    assert (store.read_bytes() if store.exists() else None) == before


def test_configs_refuse_what_they_cannot_score(tmp_path):
    with pytest.raises(ConfigError, match="'name' must name"):
        ScoreConfig(checkpoint=__file__)
    with pytest.raises(ConfigError, match="not a file"):
        ScoreConfig(name="x", checkpoint=str(tmp_path / "none.pt"))
    with pytest.raises(ConfigError, match="unknown attack"):
        ScoreConfig(name="x", checkpoint=__file__, attacks=["pgd"])
    assert ScoreConfig(name="x", checkpoint=__file__, attacks=["aa3", "pgd7"]).attacks == ("aa3", "pgd7")
    assert ScoreboardConfig().attacks == ("pgd100", "aa") and ScoreboardConfig().eps_list == (1.0, 4.0)


def synthetic_rows(pgd: list[np.ndarray], aa: list[np.ndarray], clean: list[np.ndarray]) -> pd.DataFrame:
    """A scoreboard store's rows for one model over len(pgd) datasets at eps 4 (per-image correctness given)."""
    rows = []
    for d, (p, a, c) in enumerate(zip(pgd, aa, clean)):
        for attack, label, eps, correct in (("clean", "clean", 0.0, c), ("pgd100", "PGD-100", 4.0, p),
                                            ("aa", "AutoAttack (APGD-CE + APGD-T)", 4.0, a)):
            rows.append({"protocol": "tecoa", "sampling": "random", "profile": "paper", "model": "m", "seed": 0,
                         "model_label": "M", "dataset": f"d{d}", "attack": attack, "attack_label": label, "eps": eps,
                         "n": len(correct), "n_requested": len(correct), "accuracy": float(correct.mean()),
                         "correct": pack_mask(correct), "seconds": 1.0})
    return pd.DataFrame(rows)


def test_intervals_cover_the_accuracy_and_the_gap_flag_follows_its_rule():
    rng = np.random.default_rng(0)
    clean = [rng.random(200) < 0.8 for _ in range(3)]
    pgd = [c & (rng.random(200) < 0.6) for c in clean]
    small = synthetic_rows(pgd, [p & (rng.random(200) < 0.99) for p in pgd], clean)  # AA removes ~1 point
    large = synthetic_rows(pgd, [p & (rng.random(200) < 0.7) for p in pgd], clean)  # AA removes ~14 points
    table = score.score_table(small, n_boot=200)
    avg = table[(table.dataset == "average") & (table.attack == "pgd100")].iloc[0]
    assert avg.low < avg.accuracy < avg.high and avg.high - avg.low < 10
    assert avg.accuracy == pytest.approx(np.mean([p.mean() for p in pgd]) * 100)
    one = table[(table.dataset == "d0") & (table.attack == "pgd100")].iloc[0]
    assert one.high - one.low > avg.high - avg.low  # one dataset's interval is wider than the average's
    quiet, flagged = score.gap_table(small, n_boot=200), score.gap_table(large, n_boot=200)
    assert not quiet.flag.any() and quiet.gap.iloc[0] < 3
    assert flagged.flag.all() and flagged.gap_low.iloc[0] > 3
    board = score.scoreboard(pd.concat([small, large.assign(model="big", model_label="Big")]), n_boot=100)
    (name, wide), = board.items()
    assert name == "tecoa / random / paper" and list(wide.index) == ["M", "Big"]  # sorted by robust average
    assert list(wide["gap flag"]) == [False, True] and wide["datasets"].tolist() == [3, 3]


def test_the_models_of_this_project_go_through_the_same_store_and_beside_the_published_numbers(tmp_path):
    """Notebook 08's path on mini: zero-shot CLIP built as 05 builds it, scored into the store; a rerun reuses it."""
    cfg = ScoreboardConfig(models=["zero_shot"], configs="knobs", datasets=["shapes"], n_samples=4,
                           attacks=["pgd1", "aa1"], eps_list=[4.0], bootstrap=20, batch_size=16)
    store = tmp_path / "08_scoreboard.jsonl"
    first = score.score_project_models(cfg, store_path=store, progress=False)
    again = score.score_project_models(cfg, store_path=store, progress=False)
    assert (first.computed, again.computed, again.reused) == (3, 0, 3)
    rows = score.load_scores(store)
    assert set(rows.model) == {"zero_shot"} and set(rows.protocol) == {"mini"}
    (name, table), = score.scoreboard(rows, n_boot=20).items()
    assert name == "mini / first / mini" and table.index.tolist() == ["zero-shot CLIP"]
    assert "AutoAttack reduced (APGD-CE + APGD-T, 1 steps) @ 4/255" in table.columns
    published = pd.DataFrame([{"method": "CLIP", "metric": "clean", "attack": "none", "eps": 0.0, "dataset": "average",
                               "value": 59.98, "source": "PMG-AFT", "table": "Table 2", "protocol": "pmg_aft",
                               "datasets": 16}])
    beside = score.published_beside(table, published, names={"zero-shot CLIP": "CLIP"})
    assert beside.published.tolist() == [59.98]
    assert beside.ours.iloc[0] == pytest.approx(float(table.loc["zero-shot CLIP", "clean"].split(" ")[0]))


def test_dispatched_jobs_write_shards_merged_into_the_store_as_one_process_would(world, capsys, tmp_path):
    args = command(world, "agft", "agft (jobs)", "--attacks", "pgd2")
    args[args.index("--store") + 1] = str(tmp_path / "store.jsonl")
    assert score.main([*args, "--dispatch", "inline", "--workers", "2"]) == 0
    done = last_json(capsys.readouterr().out)
    assert (done["computed"], done["merged"], done["pending"]) == (2, 2, 0)
    assert not (tmp_path / "store.jsonl.shards").exists()  # merged shards are removed
    assert score.main(args) == 0 and last_json(capsys.readouterr().out)["computed"] == 0
