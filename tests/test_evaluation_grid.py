"""The evaluation runner and 05's grid on it: one row per cell, provenance once per run, resume (also from the
old row format), first-N prefixes, the runner = the deprecated 00 loop, and the sanity signs of a sound evaluation."""
from __future__ import annotations

import copy
import functools
import json

import pandas as pd
import pytest
import torch

from nbhelpers import attacks, data, evaluation, grid, losses, metrics, suite, utils, world
from nbhelpers.config import ConfigError, EvaluationConfig
from nbhelpers.evaluation import EvalModel, text_embedder
from nbhelpers.zeroshot import build_head, model_fingerprint

GRID = dict(profile="mini", datasets=["shapes"], eps_list=[1.0, 4.0], attacks=["pgd10"],
            strong_attacks=["cw10", "pgd100", "aa"], strong_eps_list=[4.0], n=48, n_strong=16, batch_size=64,
            progress=False)


@pytest.fixture(scope="module")
def two_models(mini_model):
    """Zero-shot CLIP with its own text, and the same image tower against LAAT-expanded anchors."""
    expand = functools.partial(losses.laat_expand, spread=1.5)
    return {"zero_shot": evaluation.zero_shot_model(mini_model),
            "laat_text": EvalModel("laat_text", "zero-shot image, LAAT text", mini_model,
                                         text_embedder(mini_model, transform=expand), "laat_expanded")}


@pytest.fixture(scope="module")
def first_run(two_models, tmp_path_factory):
    path = tmp_path_factory.mktemp("grid") / "05_evaluation.jsonl"
    return grid.run_grid(two_models, path=path, config={"test": 1}, **GRID)


def test_one_row_per_planned_cell_with_provenance_once_per_run(first_run):
    rows = first_run.rows
    planned = evaluation.plan_cells(datasets=["shapes"], models=["zero_shot", "laat_text"], eps_list=[1.0, 4.0],
                                    attacks=["pgd10"], strong_attacks=["cw10", "pgd100", "aa"], strong_eps_list=[4.0],
                                    n=48, n_strong=16)
    assert len(rows) == len(planned) == first_run.computed == 2 * (1 + 2 + 3)
    stored = [json.loads(line) for line in first_run.path.read_text().splitlines()]
    meta = json.loads(first_run.meta_path.read_text())
    assert first_run.meta_path.name == "05_evaluation.meta.json" and "rows" not in meta  # not rewritten per cell
    assert meta["format_version"] == grid.STORE_FORMAT_VERSION and meta["key_fields"] == list(grid.KEY_FIELDS)
    assert len(stored) == len(planned) and len(meta["runs"]) == 1
    for r in stored:
        assert {"image_fingerprint", "text_fingerprint", "image_id", "text_id", "n", "seconds", "clean_accuracy",
                "accuracy", "margin_mean", "correct", "run"} <= set(r)
        assert r["image_id"] == r["text_id"] == ""  # these models were built without identities
        assert not set(grid.RUN_FIELDS) & set(r), "run-constant provenance belongs in the meta file"
        assert meta["runs"][r["run"]]["config"] == {"test": 1}
    run = next(iter(meta["runs"].values()))
    assert {"code_version", "torch", "device", "base_model", "fast", "amp", "created"} <= set(run)
    assert set(rows[rows.attack == "aa"].n) == {16} and set(rows[rows.attack == "pgd10"].n) == {48}
    # the two text sides differ, the image tower is the same
    fps = rows.groupby("model").agg({"image_fingerprint": "first", "text_fingerprint": "first"})
    assert fps.image_fingerprint.nunique() == 1 and fps.text_fingerprint.nunique() == 2


def test_sanity_signs_hold_exactly(first_run):
    checks = grid.sanity_checks(first_run.rows)
    assert checks.passed.all(), checks
    assert (checks.comparisons > 0).all()
    rows = first_run.rows.set_index(["model", "attack", "eps"])
    for m in ("zero_shot", "laat_text"):  # the attacks do something
        assert rows.loc[(m, "pgd10", 4.0), "accuracy"] < rows.loc[(m, "clean", 0.0), "accuracy"]


def test_rerun_reuses_every_cell_and_recomputes_removed_ones_identically(first_run, two_models):
    again = grid.run_grid(two_models, path=first_run.path, config={"test": 1}, **GRID)
    assert again.computed == 0 and again.reused == len(first_run.rows)
    lines = first_run.path.read_text().splitlines()
    kept = [line for line in lines if not ('"attack": "pgd10"' in line and '"eps": 4.0' in line)]
    assert len(kept) == len(lines) - 2
    first_run.path.write_text("\n".join(kept) + "\n")  # as if interrupted before those two cells
    resumed = grid.run_grid(two_models, path=first_run.path, config={"test": 1}, **GRID)
    assert resumed.computed == 2 and resumed.reused == len(lines) - 2
    cols = ["model", "attack", "eps", "accuracy", "correct"]
    pd.testing.assert_frame_equal(resumed.rows[cols].reset_index(drop=True),
                                  first_run.rows[cols].reset_index(drop=True))


def test_rows_in_the_old_format_are_converted_and_reused(first_run, two_models, tmp_path):
    """A store written before provenance moved to the meta file (config, code version... on every row) resumes."""
    meta = json.loads(first_run.meta_path.read_text())
    old_rows = []
    for line in first_run.path.read_text().splitlines():
        r = json.loads(line)
        stamp = meta["runs"][r.pop("run")]
        old_rows.append({**r, **{k: v for k, v in stamp.items() if k != "config"},
                         "config": json.dumps(stamp["config"], sort_keys=True)})
    path = tmp_path / "05_evaluation.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in old_rows))
    rows, runs = grid.load_store(path)
    assert len(runs) == 1 and all(r["run"] in runs for r in rows)
    assert next(iter(runs.values()))["config"] == {"test": 1} and not set(grid.RUN_FIELDS) & set(rows[0])
    kept = [r for r in old_rows if not (r["attack"] == "pgd10" and r["eps"] == 1.0)]
    path.write_text("".join(json.dumps(r) + "\n" for r in kept))
    again = grid.run_grid(two_models, path=path, config={"test": 1}, **GRID)
    assert again.computed == 2 and again.reused == len(kept)
    stored = [json.loads(line) for line in path.read_text().splitlines()]
    assert not any(set(grid.RUN_FIELDS) & set(r) for r in stored)
    assert len(json.loads(again.meta_path.read_text())["runs"]) == 2  # the converted old run and this one
    cols = ["model", "attack", "eps", "accuracy", "correct"]
    pd.testing.assert_frame_equal(again.rows[cols], first_run.rows[cols])


def test_format_1_rows_with_a_model_config_tag_are_not_taken_for_run_stamps(first_run, two_models, tmp_path):
    """Issue 17: rows of format 1 whose model carries its configuration tag as 'config' ("knobs" or a JSON object
    of knobs, as 04/05 wrote it) load with the tag renamed 'model_config', are reused, and the store is rewritten
    in format 2, which is read as stored (no guessing from field names)."""
    meta = json.loads(first_run.meta_path.read_text())
    meta.pop("format_version")
    tags = ["knobs", json.dumps({"finetune_lr": 3e-4}, sort_keys=True)]
    tagged = [{**json.loads(line), "config": tags[i % 2]}
              for i, line in enumerate(first_run.path.read_text().splitlines())]
    path = tmp_path / "05_evaluation.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in tagged))
    grid.results.meta_path(path).write_text(json.dumps(meta))
    assert grid.store_format(path) == 1
    rows, runs = grid.load_store(path)
    assert [r["model_config"] for r in rows] == [t["config"] for t in tagged]
    assert not any("config" in r for r in rows) and runs == meta["runs"]
    again = grid.run_grid(two_models, path=path, config={"test": 1}, **GRID)
    assert again.computed == 0 and again.reused == len(tagged)
    assert grid.store_format(path) == grid.STORE_FORMAT_VERSION
    stored = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["model_config"] for r in stored] == [t["config"] for t in tagged]
    reread, _ = grid.load_store(path)
    assert reread == stored


def test_a_store_of_an_unknown_format_is_refused_before_any_work(first_run, two_models, tmp_path):
    path = tmp_path / "05_evaluation.jsonl"
    path.write_text(first_run.path.read_text())
    grid.results.meta_path(path).write_text(json.dumps({"format_version": 99, "runs": {}}))
    with pytest.raises(ValueError, match="format 99"):
        grid.run_grid(two_models, path=path, config={"test": 1}, **GRID)


def test_the_committed_store_loads_as_a_fresh_clone_reads_it():
    """The committed results/05_evaluation.jsonl (not a copy of a test's store) loads: every row names a stored run,
    carries no run-constant field, and keeps its model's configuration tag; re-scoring its bits gives its accuracy."""
    path = grid.paths.PROJECT_ROOT / "results" / "05_evaluation.jsonl"
    rows, runs = grid.load_store(path)
    assert rows and all(r["run"] in runs for r in rows)
    assert not any(set(grid.RUN_FIELDS) & set(r) for r in rows)
    assert all(isinstance(r["model_config"], str) for r in rows)
    for r in rows:
        assert utils.unpack_mask(r["correct"], r["n"]).mean() == pytest.approx(r["accuracy"])


def test_robustness_table_is_the_runner_with_a_clean_row_per_task(mini_model):
    """Notebook 00's table: the runner's rows, one clean row and one PGD row per task, chance = 1 / classes."""
    table = evaluation.robustness_table(mini_model, profile="mini", datasets=["shapes", "colours"], eps_list=[0.0, 2.0],
                                        n=32, steps=2, batch_size=16)
    assert table.attack.tolist() == ["clean", "pgd2"] * 2 and table.task.tolist() == ["shapes"] * 2 + ["colours"] * 2
    assert (table.chance == 1 / table.num_classes).all() and table.accuracy.iloc[1] <= table.accuracy.iloc[0]


def test_evaluate_cell_scores_the_same_images_and_names_any_pgd(mini_model):
    ev = data.load_eval_set("mini", "shapes", n=40)
    head = build_head(mini_model, text_embedder(mini_model)(ev.classnames, ev.templates))
    clean = evaluation.evaluate_cell(head, ev, attack="clean", eps=0.0, n=24)
    cell = evaluation.evaluate_cell(head, ev, attack="cw3", eps=4.0, n=24, seed=1)
    assert cell["attack_label"] == "CW-PGD-3" and cell["n"] == 24 and clean["n_requested"] == 24
    assert cell["clean_accuracy"] == clean["accuracy"] and cell["accuracy"] < clean["accuracy"]
    correct = utils.unpack_mask(cell["correct"], 24)
    assert correct.mean() == cell["accuracy"]
    logits = metrics.predict_logits(head, ev.images[:24], ev.labels[:24], eps=4 / 255, steps=3, loss="cw", seed=1)
    assert (correct == (logits.argmax(1) == ev.labels[:24]).numpy()).all()
    assert cell["margin_mean"] == pytest.approx(float(metrics.logit_margin(logits, ev.labels[:24]).mean()))
    with pytest.raises(ValueError, match="unknown attack"):
        evaluation.resolve_attack("fgsm")
    with pytest.raises(ValueError, match="eps 0"):
        evaluation.evaluate_cell(head, ev, attack="clean", eps=4.0, n=8)


def test_pairings_carry_their_image_and_text_side(mini_model):
    sides = {"original": text_embedder(mini_model), "negated": text_embedder(mini_model, transform=lambda e: -e)}
    models = evaluation.pair_models({"pre-trained": mini_model}, sides)
    rows = evaluation.evaluate(models, profile="mini", datasets=["shapes"], attacks=["pgd1"], eps_list=[1.0], n=16)
    assert list(models) == ["pre-trained | original", "pre-trained | negated"]
    assert rows[["image", "text"]].drop_duplicates().values.tolist() == [["pre-trained", "original"],
                                                                        ["pre-trained", "negated"]]
    by_text = rows[rows.attack == "clean"].set_index("text").accuracy
    assert by_text["negated"] < by_text["original"]  # the text side is what scores the images


def test_small_run_is_a_prefix_of_a_large_one(first_run, two_models, tmp_path):
    small = grid.run_grid({"zero_shot": two_models["zero_shot"]}, profile="mini", datasets=["shapes"],
                          eps_list=[4.0], attacks=["pgd10"], n=16, batch_size=64, path=tmp_path / "s.jsonl",
                          progress=False)
    big = first_run.rows.set_index(["model", "attack", "eps"]).loc[("zero_shot", "pgd10", 4.0)]
    small_row = small.rows.set_index(["attack", "eps"]).loc[("pgd10", 4.0)]
    assert (utils.unpack_mask(small_row.correct, 16) == utils.unpack_mask(big.correct, 48)[:16]).all()


def test_sanity_checks_catch_violations(first_run):
    rows = first_run.rows.copy()
    i = rows.index[(rows.model == "zero_shot") & (rows.attack == "aa")][0]
    rows.loc[i, "correct"] = utils.pack_mask(torch.ones(16, dtype=torch.bool))  # AA "above" PGD: gradient masking
    j = rows.index[(rows.model == "laat_text") & (rows.attack == "pgd10") & (rows.eps == 4.0)][0]
    rows.loc[j, "correct"] = utils.pack_mask(torch.ones(48, dtype=torch.bool))  # accuracy rising with eps
    checks = grid.sanity_checks(rows).set_index("check").passed
    assert not checks.filter(like="AutoAttack").item()
    assert not checks.filter(like="rises with eps").item()
    assert checks.filter(like="PGD-100 never").item()


def test_live_attack_checks_pass_on_zero_shot_clip(mini_model):
    head = evaluation.zero_shot_model(mini_model)
    ev = data.load_eval_set("mini", "shapes", n=64)
    checks = grid.attack_checks(build_head(head.image_model, head.embed(ev.classnames, ev.templates)), ev.images, ev.labels, eps=4.0, large_eps=32.0,
                                batch_size=64)
    assert checks.passed.all(), checks
    assert checks.value.iloc[1] <= 0.05  # accuracy at 32/255


def test_autoattack_uses_the_standard_settings(mini_model, monkeypatch):
    import torchattacks

    seen = {}
    original = torchattacks.MultiAttack.forward

    def spy(self, images, labels):
        seen.update({type(a).__name__: (a.steps, getattr(a, "n_target_classes", None)) for a in self.attacks})
        return original(self, images, labels)

    monkeypatch.setattr(torchattacks.MultiAttack, "forward", spy)
    ev = data.load_eval_set("mini", "objects", n=4)
    head = build_head(mini_model, text_embedder(mini_model)(ev.classnames, ev.templates))
    x, y = world.generate_task("objects", 4, split="test")
    adv = attacks.autoattack(head, x, y, eps=4 / 255, n_classes=head.num_classes)
    assert seen == {"APGD": (100, None), "APGDT": (100, 9)}
    assert (adv - x).abs().max() <= 4 / 255 + 1e-6 and adv.min() >= 0 and adv.max() <= 1


def test_bad_grid_input_is_refused_before_any_work(tmp_path, two_models):
    with pytest.raises(ValueError, match="unknown attack"):
        grid.run_grid(two_models, **{**GRID, "attacks": ["fgsm"]}, path=tmp_path / "x.jsonl")
    with pytest.raises(ValueError, match="n_strong"):
        grid.run_grid(two_models, **{**GRID, "n_strong": 100}, path=tmp_path / "x.jsonl")
    with pytest.raises(ValueError, match="strong dataset"):
        grid.run_grid(two_models, **GRID, strong_datasets=["objects"], path=tmp_path / "x.jsonl")
    assert not (tmp_path / "x.jsonl").exists()


@pytest.mark.parametrize("params, message", [
    ({"models": ["tecoa", "clip_plus"]}, "unknown model"),
    ({"attacks": ["pgd7"]}, "unknown attack"),
    ({"eps_list": [0.0, 1.0]}, "must not contain 0"),
    ({"eps_list": [4.0, 1.0]}, "increasing"),
    ({"strong_eps_list": [-1.0]}, "1/255 units"),
    ({"n_strong": 256, "n_samples": 128}, "n_strong"),
    ({"datasets": ["imagenet"]}, "unknown dataset"),
    ({"attacks": [], "strong_attacks": []}, "nothing to evaluate"),
    ({"n_samples": "128"}, "must be int"),
])
def test_evaluation_config_rejects_bad_parameters(params, message):
    with pytest.raises(ConfigError, match=message):
        EvaluationConfig.from_params(**params)


def test_evaluation_config_shares_04s_training_runs():
    from nbhelpers.config import TAINotebookConfig

    ev, tai = EvaluationConfig.from_params(batch_size=128), TAINotebookConfig.from_params(batch_size=128)
    assert (suite.finetune_configs(ev, ["tecoa", "tai"], margin_offset=-0.25)
            == suite.finetune_configs(tai, ["tecoa", "tai"], margin_offset=-0.25))
    assert ev.grid_datasets()[-1] == world.FINETUNE_TASK and ev.finetune_set() == world.FINETUNE_TASK


def test_published_numbers_are_transcribed_consistently():
    pub = grid.published_results()
    avg = pub[pub.dataset == "average"].set_index(["table", "method", "metric"]).value
    assert avg[("Table 1", "CLIP", "robust")] == 17.38 and avg[("Table 2", "CLIP", "clean")] == 59.98
    assert avg[("Table 1", "TeCoA", "robust")] == 26.96 and avg[("Table 2", "TeCoA", "clean")] == 46.99
    assert avg[("Table 1", "PMG-AFT", "robust")] == 31.95 and avg[("Table 2", "PMG-AFT", "clean")] == 55.71
    keys = ["table", "method", "setting", "eps", "metric"]
    per = pub[(pub.dataset != "average") & pub.source.str.startswith("PMG-AFT")]
    assert (per.groupby(keys).dataset.nunique() == 16).all()
    means = per.groupby(keys).value.mean()
    printed = pub[pub.dataset == "average"].set_index(keys).value.reindex(means.index)
    noted = pub[(pub.dataset == "average") & pub.note.notna()].set_index(keys).index
    off = (means - printed).abs()
    assert (off.drop(noted) < 0.015).all(), off[off > 0.015]  # rounding only, except the noted misprint
    assert pub.source.notna().all() and pub.value.between(0, 100).all()


def test_compare_published_puts_our_paper_profile_means_beside_theirs():
    ours = pd.DataFrame([
        {"model": "TeCoA", "attack": "PGD-10", "eps": 1.0, "n": 1000, "robust": 27.5, "clean": 47.5, "datasets": 15},
        {"model": "zero-shot CLIP", "attack": "AutoAttack (APGD-CE + APGD-T)", "eps": 1.0, "n": 1000, "robust": 2.0,
         "clean": 60.0, "datasets": 15},
        {"model": "TIMA (IAT + TAI)", "attack": "PGD-10", "eps": 1.0, "n": 1000, "robust": 30.0, "clean": 55.0,
         "datasets": 15},
    ])
    table = grid.compare_published(grid.published_results(), ours)
    row = table.xs(("TeCoA", "robust", "PGD-10", 1.0), level=["method", "metric", "attack", "eps"])
    assert row.published.item() == 26.96 and row.ours.item() == 27.5
    clean = table.xs(("TeCoA", "clean", "none"), level=["method", "metric", "attack"]).ours
    assert set(clean) == {47.5}
    aa = table.xs(("CLIP", "robust", "AutoAttack (standard)"), level=["method", "metric", "attack"])
    assert aa.ours.item() == 2.0 and aa.published.item() == 1.74
    assert grid.compare_published(grid.published_results()).columns.tolist() == ["published"]


def test_format_2_rows_get_the_protocol_and_sampling_their_code_used(first_run, two_models, tmp_path):
    """A store of format 2 (rows without 'protocol'/'sampling') loads with "mini"/"first" (mini profile) and is
    reused cell for cell, then rewritten in the current format."""
    meta = json.loads(first_run.meta_path.read_text())
    rows = [{k: v for k, v in json.loads(line).items() if k not in ("protocol", "sampling")}
            for line in first_run.path.read_text().splitlines()]
    path = tmp_path / "05_evaluation.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    grid.results.meta_path(path).write_text(json.dumps({**meta, "format_version": 2}))
    loaded, _ = grid.load_store(path)
    assert {(r["protocol"], r["sampling"]) for r in loaded} == {("mini", "first")}
    again = grid.run_grid(two_models, path=path, config={"test": 1}, **GRID)
    assert again.computed == 0 and again.reused == len(rows)
    assert grid.store_format(path) == grid.STORE_FORMAT_VERSION
    assert set(again.rows.protocol) == {"mini"} and set(again.rows.sampling) == {"first"}


def test_released_checkpoints_are_evaluated_beside_ours_and_fill_the_published_comparison(tmp_path, mini_model):
    """'checkpoints' = {label: file}: each file becomes an EvalModel (tagged 'released', with its sha256), evaluated
    through the same grid as ours; compare_published puts a "<method> (released)" row beside the printed number."""
    released = tmp_path / "TeCoA_mini.safetensors"
    released.write_bytes(grid.paths.MINI_CHECKPOINT.read_bytes())
    cfg = EvaluationConfig.from_params(checkpoints=json.dumps({"TeCoA (released)": str(released)}))
    got = suite.released_models(cfg)
    name = suite.released_name("TeCoA (released)")
    assert list(got) == [name] and got[name].label == "TeCoA (released)" and got[name].run is None
    assert got[name].tags["model_config"] == "released"
    assert got[name].tags["checkpoint_sha256"] == utils.file_fingerprint(grid.paths.MINI_CHECKPOINT)
    for a, b in zip(got[name].image_model.state_dict().values(), mini_model.state_dict().values()):
        assert torch.equal(a, b)
    small = {**GRID, "eps_list": [4.0], "strong_attacks": [], "strong_eps_list": [], "n": 16}
    run = grid.run_grid(got, path=tmp_path / "05_evaluation.jsonl", config={}, **small)
    assert set(run.rows.model) == {name} and set(run.rows.model_config) == {"released"}
    summary = grid.summary_table(run.rows)
    table = grid.compare_published(grid.published_results(), summary)
    filled = table["ours (released checkpoint)"].dropna()
    assert len(filled) and set(filled.index.get_level_values("method")) == {"TeCoA"}
    assert "ours (released checkpoint)" not in grid.compare_published(grid.published_results(), summary.assign(
        model="zero-shot CLIP")).columns


def test_checkpoints_parameter_is_checked_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match="JSON object"):
        EvaluationConfig.from_params(checkpoints="TeCoA=/w.pt")
    with pytest.raises(ConfigError, match="not a file"):
        EvaluationConfig.from_params(checkpoints=json.dumps({"TeCoA (released)": str(tmp_path)}))
    with pytest.raises(ConfigError, match="name of a model trained here"):
        EvaluationConfig.from_params(checkpoints=json.dumps({"TeCoA": str(grid.paths.MINI_CHECKPOINT)}))


# ---------------------------------------------------------------------------------------------- identity keys
IDS = dict(profile="mini", datasets=["shapes"], eps_list=[1.0], attacks=["pgd2"], n=16, batch_size=64,
           progress=False)


def _perturbed(model):
    """A copy of the model whose image tower differs from it in the last bit of one weight (another CPU's rounding)."""
    twin = copy.deepcopy(model)
    with torch.no_grad():
        w = next(twin.clip.visual.parameters()).view(-1)
        w[0] = torch.nextafter(w[0], torch.tensor(float("inf")))
    return twin


def _with_ids(model, image_id="", text_id="", *, image_model=None):
    """The model as an EvalModel named 'm' (its own text side), with the given identities."""
    return {"m": EvalModel("m", "m", image_model or model, text_embedder(model), "original", image_id=image_id,
                           text_id=text_id)}


def test_reuse_rule_side_by_side():
    """Ids decide when both are set; a row without ids needs equal fingerprints and is then adopted; a model without
    ids falls back to the fingerprints."""
    row = {"image_id": "A", "text_id": "T", "image_fingerprint": "f1", "text_fingerprint": "g1"}
    cell = {**row, "image_fingerprint": "f2", "text_fingerprint": "g2"}  # same ids, other last bits
    assert grid.reuse(row, cell) == "reuse"
    assert grid.reuse(row, {**cell, "image_id": "B"}) is None
    assert grid.reuse(row, {**cell, "text_id": "U"}) is None
    old = {"image_fingerprint": "f1", "text_fingerprint": "g1"}  # stored before ids existed
    assert grid.reuse(old, {**old, "image_id": "A", "text_id": "T"}) == "adopt"
    assert grid.reuse({**old, "image_id": "", "text_id": ""}, {**old, "image_id": "A", "text_id": "T"}) == "adopt"
    assert grid.reuse(old, {**old, "image_fingerprint": "f2", "image_id": "A", "text_id": "T"}) is None
    assert grid.reuse(old, {**old, "image_id": "", "text_id": ""}) == "reuse"  # no ids anywhere: fingerprints
    assert grid.reuse(old, {**old, "text_fingerprint": "g2", "image_id": "", "text_id": ""}) is None
    assert grid.reuse(row, {**cell, "image_id": ""}) is None  # this model has no image id: its fingerprint decides
    assert grid.reuse(row, {**row, "image_id": ""}) == "reuse"


def test_a_cell_is_reused_by_identity_when_the_weights_differ_in_their_last_bits(mini_model, tmp_path):
    path = tmp_path / "05_evaluation.jsonl"
    first = grid.run_grid(_with_ids(mini_model, "img-A", "txt-A"), path=path, **IDS)
    assert first.computed == 2 and first.reused == 0
    assert {(r["image_id"], r["text_id"]) for r in map(json.loads, path.read_text().splitlines())} == {
        ("img-A", "txt-A")}
    twin = _perturbed(mini_model)
    assert model_fingerprint(twin.clip.visual) != first.rows.image_fingerprint.iloc[0]
    before = path.read_bytes()
    again = grid.run_grid(_with_ids(mini_model, "img-A", "txt-A", image_model=twin), path=path, **IDS)
    assert again.computed == 0 and again.reused == 2 and again.adopted == 0
    assert path.read_bytes() == before  # nothing written by a run that computes nothing
    assert set(again.rows.image_fingerprint) == set(first.rows.image_fingerprint)  # the stored row, as stored
    # another identity (another training configuration) is never taken for this one, even with equal weights
    other = grid.run_grid(_with_ids(mini_model, "img-B", "txt-A"), path=path, **IDS)
    assert other.computed == 2 and other.reused == 0
    other_text = grid.run_grid(_with_ids(mini_model, "img-B", "txt-B"), path=path, **IDS)
    assert other_text.computed == 2 and other_text.reused == 0
    # the store keeps one row per cell (the last computed), each appended, then compacted once
    stored = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(stored) == 2 and {(r["image_id"], r["text_id"]) for r in stored} == {("img-B", "txt-B")}


def test_rows_without_ids_are_adopted_when_their_fingerprints_match(mini_model, tmp_path):
    """A store written before ids existed (rows without image_id/text_id) is reused by a model with ids whose
    fingerprints equal the rows', and then carries its ids, numbers unchanged, so that a machine whose weights differ
    in their last bits reuses it too; rows whose fingerprints differ are not adopted."""
    path = tmp_path / "05_evaluation.jsonl"
    legacy = grid.run_grid(_with_ids(mini_model), path=path, **IDS)
    lines = [{k: v for k, v in json.loads(line).items() if k not in grid.ID_FIELDS}
             for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in lines))  # as committed before ids
    twin = _perturbed(mini_model)
    copy_path = tmp_path / "copy.jsonl"
    copy_path.write_text(path.read_text())
    grid.results.meta_path(copy_path).write_text(grid.results.meta_path(path).read_text())
    not_adopted = grid.run_grid(_with_ids(mini_model, "img-A", "txt-A", image_model=twin), path=copy_path, **IDS)
    assert not_adopted.computed == 2 and not_adopted.adopted == 0  # other weights, no ids: not this model's cells
    adopted = grid.run_grid(_with_ids(mini_model, "img-A", "txt-A"), path=path, **IDS)
    assert adopted.computed == 0 and adopted.reused == adopted.adopted == 2
    stored = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(stored) == 2 and all((r["image_id"], r["text_id"]) == ("img-A", "txt-A") for r in stored)
    assert [{k: v for k, v in r.items() if k not in grid.ID_FIELDS} for r in stored] == lines  # numbers as stored
    assert grid.store_status(path)["current"] == 2 and grid.store_status(path)["other"] == 0
    elsewhere = grid.run_grid(_with_ids(mini_model, "img-A", "txt-A", image_model=twin), path=path, **IDS)
    assert elsewhere.computed == 0 and elsewhere.reused == 2
    pd.testing.assert_frame_equal(elsewhere.rows[["accuracy", "correct"]], legacy.rows[["accuracy", "correct"]])


def test_grid_cli_reports_compacts_and_prunes_the_store(mini_model, tmp_path, capsys):
    path = tmp_path / "05_evaluation.jsonl"
    grid.run_grid(_with_ids(mini_model), path=path, **IDS)  # two cells without ids
    grid.run_grid(_with_ids(mini_model, "img-A", "txt-A"), path=path, **{**IDS, "n": 8})  # two with ids
    with open(path, "a") as fh:
        fh.write(path.read_text().splitlines()[0] + "\n")  # a superseded line
    assert grid.main(["--status", str(path)]) == 0
    status = json.loads(capsys.readouterr().out)
    assert {k: status[k] for k in ("lines", "keys", "superseded", "current", "other")} == {
        "lines": 5, "keys": 4, "superseded": 1, "current": 2, "other": 2}
    assert grid.main(["--compact", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["dropped_lines"] == 1 and len(path.read_text().splitlines()) == 4
    assert grid.main(["--prune", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["dropped_lines"] == 2
    assert all(r["image_id"] == "img-A" for r in map(json.loads, path.read_text().splitlines()))
    with pytest.raises(SystemExit):
        grid.main(["--status", str(tmp_path / "missing.jsonl")])
