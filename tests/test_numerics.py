"""Keys move when numbers move, and only then (issues 18 and 28).

Cache and store keys hold each module's declared ``NUMERICS_VERSION`` (utils.numerics_versions), not a hash of its
source and not a hash of computed floats. Two guards:

- a tiny deterministic case of every training method (two SGD steps), of IAT (three Adam steps) and of one
  evaluation cell per attack is compared with the outputs recorded in ``tests/numerics_reference.json`` at the
  versions it was recorded with: changed numbers without a version bump fail, naming the constants to bump;
- a copy of the package with a comment, a docstring and a renamed local in every versioned module gives the same
  cache, projection and study keys as the package itself (and bumping one version in the copy changes them).

The cases run in float64 (issue 28): every model they build is the committed mini CLIP cast to float64, reading the
world's float32 pixels and the attacks' float32 start noise exactly as a float32 run does. In float32, CPU kernels
(AVX2 or AVX-512, MKL's and oneDNN's code paths) and thread counts round differently in the last bits, and two
SGD steps, a sign-gradient attack or a signed sum whose terms cancel turn that into changes of up to 1.5e-3
relative (1 against 2 threads): as large as a small change of formula. In float64 the computation's own
differences are ~1e-14 relative. What remains is the input: the world draws its pixel noise with torch.randn,
whose float32 values differ in the last bit between ATen's kernel levels (default against AVX2 / AVX-512), so
under ATEN_CPU_CAPABILITY=default the smooth cases move by ~3e-7 and the long sign-gradient attacks (PGD-100,
AutoAttack) by ~2e-4. The tolerance is therefore not chosen but measured per case: ``--record`` re-runs every
case under each kernel level and thread count of ``NOISE_SETTINGS``, stores each case's largest relative
difference, and the check allows NOISE_FACTOR times that (at least RTOL_FLOOR). The negative controls (a 0.1%
change of an objective, a changed attack) are caught at those tolerances.

After an intended change of numbers: bump the NUMERICS_VERSION of the module you changed, then re-record with
``python tests/test_numerics.py --record`` (about 10 minutes: the noise runs) and commit the reference with the
change.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torchattacks

from nbhelpers import (attacks, data, evaluation, fastpath, losses, methods, models, prompts, study, study_runs,
                       text_tuning, training, world, zeroshot)
from nbhelpers.config import FinetuneConfig, IATConfig, StudyConfig
from nbhelpers.utils import numerics_versions

REFERENCE = Path(__file__).with_name("numerics_reference.json")
NOISE_FACTOR = 100  # a case may move by this many times the largest difference --record measured for it
RTOL_FLOOR = 1e-6  # ... and at least this (relative): the attack cells' logits and margins are float32 numbers
# (evaluation keeps logits in float32), whose last bit (6e-8 relative) a kernel may round either way
ABS_TOL = 1e-12  # for outputs at or near zero
# (name, environment) of each setting --record runs the cases under: thread counts and CPU kernel levels (ATen's own
# dispatch, and MKL's and oneDNN's, which pick their kernels from the CPU independently of ATen)
NOISE_SETTINGS: tuple[tuple[str, dict[str, str]], ...] = (
    ("1 thread", {"OMP_NUM_THREADS": "1"}),
    ("2 threads", {"OMP_NUM_THREADS": "2"}),
    ("ATen default (no SIMD), 2 threads", {"OMP_NUM_THREADS": "2", "ATEN_CPU_CAPABILITY": "default"}),
    ("ATen avx2, 2 threads", {"OMP_NUM_THREADS": "2", "ATEN_CPU_CAPABILITY": "avx2"}),
    ("ATen avx2, MKL and oneDNN AVX2, 1 thread", {"OMP_NUM_THREADS": "1", "ATEN_CPU_CAPABILITY": "avx2",
                                                  "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}),
    ("ATen default, MKL SSE4.2, oneDNN SSE4.1, 2 threads", {
        "OMP_NUM_THREADS": "2", "ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
        "ONEDNN_MAX_CPU_ISA": "SSE41"}),
)
TRAINING_MODULES = (training, methods, losses, attacks, zeroshot, models, world, data)
IAT_MODULES = (text_tuning, losses, models, world, data)
ATTACK_MODULES = (attacks, fastpath, evaluation, zeroshot, models, world, data)
FAST_CASES = ("pgd10", "cw10")  # attacks also checked through fastpath (the layers every attack shares)
SMALL = dict(finetune_steps=2, train_batch_size=16, warmup_steps=1)
PROMPT_CASE = "method:tecoa+visual_prompt"


@contextlib.contextmanager
def float64_models() -> Iterator[None]:
    """Every mini CLIP the engine builds inside the block is float64 (same weights, cast): the cases' precision."""
    original = models.create_model_and_transforms

    def build(*args: object, **kwargs: object) -> tuple[models.ClipModel, object]:
        model, preprocess = original(*args, **kwargs)
        return model.double(), preprocess

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(training, "create_model_and_transforms", build)
        yield


def _base() -> models.ClipModel:
    """The committed mini CLIP in float64."""
    return models.create_model_and_transforms("mini")[0].double()


def _check_float64(module: torch.nn.Module, what: str) -> None:
    dtypes = {p.dtype for p in module.parameters()}
    assert dtypes == {torch.float64}, f"{what} ran in {dtypes}, not float64: the case no longer runs in float64"


def _iat_case(tmp: Path) -> tuple[dict[str, float], Path]:
    """IAT's text projection after three Adam steps: losses and the projection's change; and its saved file."""
    cfg = IATConfig.from_params(iat_steps=3, iat_images=64, **SMALL)
    base = _base()
    preprocess = models.create_model_and_transforms("mini")[1]
    pool = training.TrainData(FinetuneConfig.from_params(method="tai", **SMALL), preprocess=preprocess)
    res = text_tuning.tune_text(base, cfg, classnames=pool.classnames, templates=pool.templates,
                                images=pool.first_images(cfg.iat_images), progress=False)
    _check_float64(res.model, "IAT")
    change = (res.model.clip.text_projection - base.clip.text_projection).detach()
    out = {f"loss_{r.step}": float(r.loss) for r in res.history.itertuples()}
    out |= {"projection_change_l1": float(change.abs().sum()), "projection_change_sum": float(change.sum())}
    path = text_tuning.save_projection(res.model, tmp / "iat.safetensors", config=cfg.to_dict())
    return out, path


def _method_case(method: str, tmp: Path, *, iat_path: Path | None = None, **knobs: object) -> dict[str, float]:
    """A method's two SGD steps from the committed mini CLIP, in float64: loss per step and the image tower's
    change (with visual prompts: the change of the prompts)."""
    extra = {"margin_offset": -0.1, **knobs} if method == "tai" else dict(knobs)
    if iat_path is not None:
        extra |= {"text_source": "iat", "iat_projection": str(iat_path)}
    cfg = FinetuneConfig.from_params(method=method, finetune_lr=1e-3, checkpoint_every=100, **extra, **SMALL)
    with float64_models():
        res = training.finetune(cfg, out=tmp / f"{method}{'_iat' if iat_path else ''}{'_vp' if knobs else ''}.pt",
                                progress=False)
    _check_float64(res.model, f"method {method}")
    base = _base()
    if cfg.adaptation == "visual_prompt":
        start = prompts.attach_prompts(base, seed=world.derive_seed(cfg.train_seed, "visual-prompts"))
        pairs = zip(prompts.prompted_visual(res.model).prompt_parameters(),
                    prompts.prompted_visual(start).prompt_parameters())
    else:
        pairs = zip(res.model.visual.parameters(), base.visual.parameters())
    change = [(a - b.to(a.dtype)).detach() for a, b in pairs]
    out = {f"loss_{r.step}": float(r.loss) for r in res.history.itertuples()}
    out |= {"visual_change_l1": float(sum(c.abs().sum() for c in change)),
            "visual_change_sum": float(sum(c.sum() for c in change))}
    return out


@contextlib.contextmanager
def _small_fab_and_square() -> Iterator[None]:
    """aa_full's FAB-T at 10 steps and Square at 100 queries (standard: 100 and 5000): torchattacks' own code,
    pinned by the lock, is not what this check is for, our wrapper's settings are; in float64 the standard budget
    takes minutes."""
    original = torchattacks.AutoAttack

    class SmallAutoAttack(original):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)
            for part in self._autoattack.attacks:
                if isinstance(part, torchattacks.FAB):
                    part.steps = 10
                if isinstance(part, torchattacks.Square):
                    part.n_queries = 100

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torchattacks, "AutoAttack", SmallAutoAttack)
        yield


def _attack_case(attack: str, *, fast: bool) -> dict[str, float]:
    """One evaluation cell of the committed mini CLIP in float64 on the first 8 'shapes' test images at 4/255 (the
    float32 pixels and start noise of a float32 run; torchattacks gets float32 logits, see attacks.autoattack)."""
    base, preprocess = _base(), models.create_model_and_transforms("mini")[1]
    ev = data.load_eval_set("mini", "shapes", n=8, preprocess=preprocess)
    head = zeroshot.build_head(base, zeroshot.build_class_embeddings(base, ev.classnames, ev.templates))
    _check_float64(head, f"attack {attack}")
    with _small_fab_and_square():
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
    for attack in attacks.ATTACKS:  # the fast path for the PGD attacks
        for fast in (False, True) if attack in FAST_CASES else (False,):
            cases[f"attack:{attack}{':fast' if fast else ''}"] = {"versions": numerics_versions(*ATTACK_MODULES),
                                                                  "values": _attack_case(attack, fast=fast)}
    return cases


def read_reference() -> dict:
    """The recorded reference: {"noise": what --record measured between settings, "cases": {case: ...}}."""
    return json.loads(REFERENCE.read_text())


def tolerance(reference: dict, case: str) -> float:
    """A case's relative tolerance: NOISE_FACTOR x the largest difference measured for it between settings."""
    return max(NOISE_FACTOR * float(reference["noise"]["per_case"].get(case, 0.0)), RTOL_FLOOR)


def relative_differences(recorded: dict[str, dict], now: dict[str, dict]) -> dict[str, float]:
    """{"case/output": |now - recorded| / max(|recorded|, ABS_TOL)} over the outputs both hold."""
    return {f"{name}/{k}": abs(now[name]["values"][k] - v) / max(abs(v), ABS_TOL)
            for name, case in recorded.items() if name in now
            for k, v in case["values"].items() if k in now[name]["values"]}


def _differences(recorded: dict[str, float], now: dict[str, float], *, rtol: float) -> list[str]:
    out = [f"{k}: missing now" for k in recorded if k not in now] + [f"{k}: new" for k in now if k not in recorded]
    out += [f"{k}: recorded {recorded[k]!r}, now {now[k]!r}" for k in recorded
            if k in now and not math.isclose(recorded[k], now[k], rel_tol=rtol, abs_tol=ABS_TOL)]
    return out


@pytest.fixture(scope="module")
def reference() -> dict:
    return read_reference()


@pytest.fixture(scope="module")
def cases() -> dict[str, dict]:
    return compute_cases()


def test_every_method_and_attack_has_a_recorded_case(reference):
    recorded = reference["cases"]
    assert {f"method:{m}" for m in methods.engine_names()} | {"iat", "method:tai+iat (TIMA)", PROMPT_CASE} <= set(recorded)
    assert {f"attack:{a}" for a in attacks.ATTACKS} <= set(recorded)


def test_the_tolerance_comes_from_measured_noise(reference):
    """--record measured every setting of NOISE_SETTINGS for every case; the tolerances it gives stay far below what
    a changed formula moves (1e-3 relative for a 0.1% change of an objective) for all but the long sign-gradient
    attacks, which amplify the pixels' last-bit differences."""
    noise, cases = reference["noise"], reference["cases"]
    assert {name for name, _ in NOISE_SETTINGS} == set(noise["settings"])
    assert set(noise["per_case"]) == set(cases)
    assert noise["max_relative_difference"] == max(noise["settings"].values()) == max(noise["per_case"].values())
    chaotic = {"attack:pgd100", "attack:aa", "attack:aa_full"}
    loose = {c: tolerance(reference, c) for c in cases if c not in chaotic and tolerance(reference, c) > 1e-4}
    assert not loose, f"cases whose measured noise allows changes above 1e-4: {loose}"
    assert all(tolerance(reference, c) <= 0.05 for c in chaotic)


def test_numbers_move_only_with_a_version_bump(cases, reference):
    recorded = reference["cases"]
    problems = []
    for name, case in cases.items():
        ref, rtol = recorded.get(name), tolerance(reference, name)
        if ref is None:
            problems.append(f"{name}: no recorded outputs; record them with `python tests/test_numerics.py --record`")
            continue
        diffs = _differences(ref["values"], case["values"], rtol=rtol)
        if ref["versions"] != case["versions"]:
            problems.append(f"{name}: recorded at numerics versions {ref['versions']}, the code declares "
                            f"{case['versions']}; re-record with `python tests/test_numerics.py --record`")
        elif diffs:
            bump = ", ".join(f"nbhelpers.{m}.NUMERICS_VERSION" for m in case["versions"])
            problems.append(f"{name}: outputs changed without a version bump ({'; '.join(diffs)}; relative tolerance "
                            f"{rtol:.1e}, {NOISE_FACTOR}x this case's noise measured between CPU kernels and thread "
                            f"counts): bump the NUMERICS_VERSION of the module whose numbers you changed (one of "
                            f"{bump}), then re-record with `python tests/test_numerics.py --record`")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("factor", [1.5, 1.001])
def test_the_check_catches_a_changed_objective(cases, reference, monkeypatch, tmp_path, factor):
    """Negative control: TeCoA's loss scaled by `factor` (a changed formula, no bump) fails the comparison; 1.001
    moves the outputs by about 1e-3 relative, which the float32 check (tolerance 1e-3) could not tell from noise."""
    ref, rtol = reference["cases"]["method:tecoa"], tolerance(reference, "method:tecoa")
    original = methods.get("tecoa")
    monkeypatch.setitem(methods._REGISTRY, "tecoa", dataclasses.replace(
        original, objective=lambda ctx: factor * original.objective(ctx)))
    changed = _method_case("tecoa", tmp_path)
    assert _differences(ref["values"], changed, rtol=rtol)
    assert not _differences(ref["values"], cases["method:tecoa"]["values"], rtol=rtol)


def test_the_check_catches_a_changed_attack(cases, reference, monkeypatch):
    """Negative control: PGD's cross-entropy taken at half the logits (a changed attack, same steps and budget)
    fails the comparison of the PGD-10 cell, while the unchanged cell passes it."""
    ref, rtol = reference["cases"]["attack:pgd10"], tolerance(reference, "attack:pgd10")
    original = attacks.attack_objective
    monkeypatch.setattr(attacks, "attack_objective", lambda logits, labels, loss: original(logits / 2, labels, loss))
    changed = _attack_case("pgd10", fast=False)
    assert _differences(ref["values"], changed, rtol=rtol)
    assert not _differences(ref["values"], cases["attack:pgd10"]["values"], rtol=rtol)


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


def _compute_in(env: dict[str, str]) -> dict[str, dict]:
    """The cases computed in a child process under extra environment variables (a setting of NOISE_SETTINGS)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cases.json"
        child = dict(os.environ, HF_HUB_OFFLINE="1", TQDM_DISABLE="1", **env)
        subprocess.run([sys.executable, __file__, "--compute", str(out)], env=child, check=True, timeout=1800)
        return json.loads(out.read_text())


def record() -> dict:
    """The reference: the cases here, and the largest relative difference of each case under each setting."""
    cases = compute_cases()
    settings, per_case = {}, dict.fromkeys(cases, 0.0)
    for name, env in NOISE_SETTINGS:
        diffs = relative_differences(cases, _compute_in(env))
        settings[name] = max(diffs.values())
        for key, d in diffs.items():
            case = key.rsplit("/", 1)[0]
            per_case[case] = max(per_case[case], d)
        print(f"{name}: largest relative difference {settings[name]:.2e}", flush=True)
    noise = {"settings": settings, "per_case": per_case, "max_relative_difference": max(settings.values()),
             "measured_on": f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
                            f"ATen {torch.backends.cpu.get_cpu_capability()}"}
    return {"noise": noise, "cases": cases}


if __name__ == "__main__":
    os.environ.setdefault("TQDM_DISABLE", "1")
    if sys.argv[1:2] == ["--compute"] and len(sys.argv) == 3:
        Path(sys.argv[2]).write_text(json.dumps(compute_cases(), sort_keys=True))
    elif sys.argv[1:] == ["--record"]:
        reference = record()
        with tempfile.NamedTemporaryFile("w", dir=REFERENCE.parent, suffix=".tmp", delete=False) as fh:
            fh.write(json.dumps(reference, indent=1, sort_keys=True) + "\n")
        os.replace(fh.name, REFERENCE)
        worst = max(reference["cases"], key=lambda c: tolerance(reference, c))
        print(f"recorded {REFERENCE} (largest tolerance {tolerance(reference, worst):.1e}, {worst})")
    else:
        raise SystemExit("usage: python tests/test_numerics.py --record   (writes tests/numerics_reference.json)")
