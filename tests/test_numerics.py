"""Keys move when numbers move, and only then (issue 18).

Cache and store keys hold each module's declared ``NUMERICS_VERSION`` (utils.numerics_versions), not a hash of its
source and not a hash of computed floats. Two guards:

- a tiny deterministic case of every training method (two SGD steps), of IAT (three Adam steps) and of one
  evaluation cell per attack is compared with the outputs recorded in ``tests/numerics_reference.json`` at the
  versions it was recorded with: changed numbers without a version bump fail, naming the constants to bump;
- a copy of the package with a comment, a docstring and a renamed local in every versioned module gives the same
  cache, projection and study keys as the package itself (and bumping one version in the copy changes them).

After an intended change of numbers: bump the NUMERICS_VERSION of the module you changed, then re-record with
``python tests/test_numerics.py --record`` and commit the reference with the change.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from nbhelpers import (attacks, data, evaluation, fastpath, losses, methods, models, prompts, study, study_runs,
                       text_tuning, training, world, zeroshot)
from nbhelpers.config import FinetuneConfig, IATConfig, StudyConfig
from nbhelpers.utils import numerics_versions

REFERENCE = Path(__file__).with_name("numerics_reference.json")
RTOL = 1e-3  # float noise between CPUs (AVX-512 or not) is ~1e-6 relative; a changed formula moves far more
TRAINING_MODULES = (training, methods, losses, attacks, zeroshot, models, world, data)
IAT_MODULES = (text_tuning, losses, models, world, data)
ATTACK_MODULES = (attacks, fastpath, evaluation, zeroshot, models, world, data)
FAST_CASES = ("pgd10", "cw10", "aa")  # attacks also checked through fastpath
SMALL = dict(finetune_steps=2, train_batch_size=16, warmup_steps=1)
PROMPT_CASE = "method:tecoa+visual_prompt"


def _iat_case(tmp: Path) -> tuple[dict[str, float], Path]:
    """IAT's text projection after three Adam steps: losses and the projection's change; and its saved file."""
    cfg = IATConfig.from_params(iat_steps=3, iat_images=64, **SMALL)
    base, preprocess = models.create_model_and_transforms("mini")
    pool = training.TrainData(FinetuneConfig.from_params(method="tai", **SMALL), preprocess=preprocess)
    res = text_tuning.tune_text(base, cfg, classnames=pool.classnames, templates=pool.templates,
                                images=pool.first_images(cfg.iat_images), progress=False)
    change = (res.model.clip.text_projection - base.clip.text_projection).detach()
    out = {f"loss_{r.step}": float(r.loss) for r in res.history.itertuples()}
    out |= {"projection_change_l1": float(change.abs().sum()), "projection_change_sum": float(change.sum())}
    path = text_tuning.save_projection(res.model, tmp / "iat.safetensors", config=cfg.to_dict())
    return out, path


def _method_case(method: str, tmp: Path, *, iat_path: Path | None = None, **knobs: object) -> dict[str, float]:
    """A method's two SGD steps from the committed mini CLIP: loss per step and the image tower's change (with
    visual prompts: the change of the prompts)."""
    extra = {"margin_offset": -0.1, **knobs} if method == "tai" else dict(knobs)
    if iat_path is not None:
        extra |= {"text_source": "iat", "iat_projection": str(iat_path)}
    cfg = FinetuneConfig.from_params(method=method, finetune_lr=1e-3, checkpoint_every=100, **extra, **SMALL)
    res = training.finetune(cfg, out=tmp / f"{method}{'_iat' if iat_path else ''}{'_vp' if knobs else ''}.pt",
                            progress=False)
    base, _ = models.create_model_and_transforms("mini")
    if cfg.adaptation == "visual_prompt":
        start = prompts.attach_prompts(base, seed=world.derive_seed(cfg.train_seed, "visual-prompts"))
        pairs = zip(prompts.prompted_visual(res.model).prompt_parameters(),
                    prompts.prompted_visual(start).prompt_parameters())
    else:
        pairs = zip(res.model.visual.parameters(), base.visual.parameters())
    change = [(a - b).detach() for a, b in pairs]
    out = {f"loss_{r.step}": float(r.loss) for r in res.history.itertuples()}
    out |= {"visual_change_l1": float(sum(c.abs().sum() for c in change)),
            "visual_change_sum": float(sum(c.sum() for c in change))}
    return out


def _attack_case(attack: str, *, fast: bool) -> dict[str, float]:
    """One evaluation cell of the committed mini CLIP on the first 8 'shapes' test images at 4/255."""
    base, preprocess = models.create_model_and_transforms("mini")
    ev = data.load_eval_set("mini", "shapes", n=8, preprocess=preprocess)
    head = zeroshot.build_head(base, zeroshot.build_class_embeddings(base, ev.classnames, ev.templates))
    cell = evaluation.evaluate_cell(head, ev, attack=attack, eps=4.0, n=8, batch_size=8, fast=fast)
    return {"accuracy": float(cell["accuracy"]), "margin_mean": float(cell["margin_mean"])}


def compute_cases() -> dict[str, dict]:
    """{case: {"versions": the numerics versions it depends on, "values": its outputs}} for every case."""
    torch.manual_seed(0)
    cases: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        iat_values, iat_path = _iat_case(Path(tmp))
        cases["iat"] = {"versions": numerics_versions(*IAT_MODULES), "values": iat_values}
        for method in methods.engine_names():
            cases[f"method:{method}"] = {"versions": numerics_versions(*TRAINING_MODULES),
                                         "values": _method_case(method, Path(tmp))}
        cases["method:tai+iat (TIMA)"] = {"versions": numerics_versions(*TRAINING_MODULES, text_tuning),
                                          "values": _method_case("tai", Path(tmp), iat_path=iat_path)}
        cases[PROMPT_CASE] = {"versions": numerics_versions(*TRAINING_MODULES, prompts),
                              "values": _method_case("tecoa", Path(tmp), adaptation="visual_prompt")}
    for attack in attacks.ATTACKS:  # the fast path once per kind of attack (aa_full's extra attacks are slow)
        for fast in (False, True) if attack in FAST_CASES else (False,):
            cases[f"attack:{attack}{':fast' if fast else ''}"] = {"versions": numerics_versions(*ATTACK_MODULES),
                                                                  "values": _attack_case(attack, fast=fast)}
    return cases


def _differences(recorded: dict[str, float], now: dict[str, float]) -> list[str]:
    out = [f"{k}: missing now" for k in recorded if k not in now] + [f"{k}: new" for k in now if k not in recorded]
    out += [f"{k}: recorded {recorded[k]:.6g}, now {now[k]:.6g}" for k in recorded
            if k in now and not math.isclose(recorded[k], now[k], rel_tol=RTOL, abs_tol=1e-6)]
    return out


@pytest.fixture(scope="module")
def cases() -> dict[str, dict]:
    return compute_cases()


def test_every_method_and_attack_has_a_recorded_case():
    recorded = json.loads(REFERENCE.read_text())
    assert {f"method:{m}" for m in methods.engine_names()} | {"iat", "method:tai+iat (TIMA)", PROMPT_CASE} <= set(recorded)
    assert {f"attack:{a}" for a in attacks.ATTACKS} <= set(recorded)


def test_numbers_move_only_with_a_version_bump(cases):
    recorded = json.loads(REFERENCE.read_text())
    problems = []
    for name, case in cases.items():
        ref = recorded.get(name)
        if ref is None:
            problems.append(f"{name}: no recorded outputs; record them with `python tests/test_numerics.py --record`")
            continue
        diffs = _differences(ref["values"], case["values"])
        if ref["versions"] != case["versions"]:
            problems.append(f"{name}: recorded at numerics versions {ref['versions']}, the code declares "
                            f"{case['versions']}; re-record with `python tests/test_numerics.py --record`")
        elif diffs:
            bump = ", ".join(f"nbhelpers.{m}.NUMERICS_VERSION" for m in case["versions"])
            problems.append(f"{name}: outputs changed without a version bump ({'; '.join(diffs)}): bump the "
                            f"NUMERICS_VERSION of the module whose numbers you changed (one of {bump}), then "
                            "re-record with `python tests/test_numerics.py --record`")
    assert not problems, "\n".join(problems)


def test_the_check_catches_a_changed_objective(cases, monkeypatch, tmp_path):
    """Negative control: TeCoA's loss scaled by 1.5 (a changed formula, no bump) fails the comparison."""
    ref = json.loads(REFERENCE.read_text())["method:tecoa"]
    original = methods.get("tecoa")
    monkeypatch.setitem(methods._REGISTRY, "tecoa", dataclasses.replace(
        original, objective=lambda ctx: 1.5 * original.objective(ctx)))
    changed = _method_case("tecoa", tmp_path)
    assert _differences(ref["values"], changed)
    assert not _differences(ref["values"], cases["method:tecoa"]["values"])


_KEYS_SCRIPT = """
import json, nbhelpers
from nbhelpers import config, methods, study, study_runs, text_tuning, training
cfg = config.StudyConfig()
keys = {"package": nbhelpers.__file__,
        "cache": {m: training.cache_key(config.FinetuneConfig.from_params(method=m)) for m in methods.engine_names()},
        "projection": text_tuning.projection_key(config.IATConfig()),
        "study": {s: study.row_key(stage=s, method="tima", overrides={"sc_weight": 5.0}, train_seed=0,
                                   evaluation=study_runs.stage_evaluation(cfg, s)) for s in study.STAGES}}
print(json.dumps(keys))
"""


def _keys_of(package_parent: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(package_parent), HF_HUB_OFFLINE="1")
    env["TIMA_MINI_CHECKPOINT"] = str(models.paths.MINI_CHECKPOINT)
    proc = subprocess.run([sys.executable, "-c", _KEYS_SCRIPT], cwd=package_parent, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_comments_docstrings_and_renames_change_no_key(tmp_path):
    """Edit a copy of the package (a comment, a docstring and a renamed private helper in every versioned module):
    every cache, projection and study key stays; bumping losses' NUMERICS_VERSION in the copy changes them."""
    src = Path(training.__file__).parent
    shutil.copytree(src, tmp_path / "nbhelpers", ignore=shutil.ignore_patterns("__pycache__"))
    here = _keys_of(src.parent)
    for module in (training, losses, attacks, fastpath, zeroshot, text_tuning, evaluation, data, world,
                   study_runs.suite):
        path = tmp_path / "nbhelpers" / Path(module.__file__).name
        text = path.read_text()
        text = text.replace('"""', '"""Edited docstring (issue 18 test). ', 1)
        text += "\n\n# a comment added by tests/test_numerics.py\n\n\ndef _renamed_helper_for_the_test() -> None:\n" \
                '    """A function moved here by the test."""\n'
        path.write_text(text)
    edited = _keys_of(tmp_path)
    assert Path(edited["package"]).parent == tmp_path / "nbhelpers"
    here.pop("package"), edited.pop("package")
    assert edited == here
    losses_copy = tmp_path / "nbhelpers" / "losses.py"
    losses_copy.write_text(losses_copy.read_text().replace("NUMERICS_VERSION = 1", "NUMERICS_VERSION = 2", 1))
    bumped = _keys_of(tmp_path)
    bumped.pop("package")
    assert bumped["projection"] != here["projection"] and bumped["study"] != here["study"]
    assert all(bumped["cache"][m] != here["cache"][m] for m in methods.engine_names())


def test_the_committed_stores_hold_this_codes_numerics():
    """Both committed study stores were carried over to numerics keys (no row recomputed): every row's evaluation
    holds this code's numerics fingerprint, and its key is the row key of its fields."""
    fingerprint = study_runs.numerics_fingerprint()
    for path in (study_runs.paths.STUDY_STORE, study_runs.paths.STUDY_REPLICA_STORE):
        rows = study.StudyStore(path).rows()
        assert rows and {r["evaluation"]["numerics"] for r in rows} == {fingerprint}, path
        assert all(r["key"] == study.row_key(stage=r["stage"], method=r["method"], overrides=r["overrides"],
                                             train_seed=r["train_seed"], evaluation=r["evaluation"]) for r in rows)
    assert StudyConfig().profile == "mini"


if __name__ == "__main__":
    if sys.argv[1:] != ["--record"]:
        raise SystemExit("usage: python tests/test_numerics.py --record   (writes tests/numerics_reference.json)")
    os.environ.setdefault("TQDM_DISABLE", "1")
    REFERENCE.write_text(json.dumps(compute_cases(), indent=1, sort_keys=True) + "\n")
    print(f"recorded {REFERENCE}")
