"""The full evaluation of 05: (model, dataset, attack, eps) cells, first-N, one JSON line per cell, resumable.

Every cell is one row of ``results/05_evaluation.jsonl`` holding its accuracy, the clean accuracy of the same
images, the per-sample correctness (hex of the packed bits, so any prefix of a larger run can be re-scored),
the sample count, the seconds it took, and its provenance (config, image and text fingerprints, code version).
The file is rewritten atomically after every cell, so an interrupted evaluation loses at most the cell in
flight; a rerun reuses every stored cell whose model fingerprints still match and computes only the rest.

Attacks (eps in 1/255 units everywhere here): PGD-10 and PGD-100 (cross-entropy, random start, step 1/255),
CW-margin PGD-10, and AutoAttack's two gradient attacks of the standard version (APGD-CE, APGD-T; torchattacks)
or torchattacks' full standard AutoAttack. Cheap attacks run on the first n images at every eps; strong ones on
the first n_strong of the same images at the strong eps.
"""
from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from nbhelpers import analysis, data as data_mod, metrics, paths
from nbhelpers import attacks as attack_mod
from nbhelpers.attacks import ATTACKS, AttackSpec  # noqa: F401 - re-exported for notebooks
from nbhelpers.utils import atomic_path, code_version
from nbhelpers.zeroshot import ZeroShotClassifier, model_fingerprint


KEY_FIELDS = ("profile", "model", "dataset", "attack", "eps", "n_requested", "seed")


def pack_mask(correct: torch.Tensor) -> str:
    """Boolean mask (N,) -> hex string of its packed bits."""
    return np.packbits(correct.numpy().astype(np.uint8)).tobytes().hex()


def unpack_mask(hexbits: str, n: int) -> np.ndarray:
    """Hex string from pack_mask -> boolean array (n,)."""
    return np.unpackbits(np.frombuffer(bytes.fromhex(hexbits), dtype=np.uint8))[:n].astype(bool)


def load_rows(path: str | Path) -> list[dict]:
    """Rows of a JSON-lines results file (empty if it does not exist)."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{i} is not valid JSON ({err}); remove the line or the file") from err
    return rows


def _write_rows(path: Path, rows: list[dict]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def _key(row: dict) -> tuple:
    return tuple(row[k] for k in KEY_FIELDS)


def attack_logits(attack: str, head: ZeroShotClassifier, images: torch.Tensor, labels: torch.Tensor, *, eps: float,
                  seed: int = 0, batch_size: int = 256, device: torch.device | str = "cpu", fast: bool = False,
                  amp: bool = False) -> torch.Tensor:
    """Logits (N, C) on CPU of head on images attacked by the named attack at eps (1/255 units; 0 = clean).

    fast: same-math faster layers (nbhelpers.fastpath); amp: bf16 autocast for our PGD (GPU)."""
    spec = ATTACKS[attack]
    if spec.kind == "pgd" or eps == 0:
        return metrics.predict_logits(head, images, labels, eps=eps / 255, steps=spec.steps or 10, loss=spec.loss,
                                      batch_size=batch_size, device=device, seed=seed, fast=fast, amp=amp)
    out = []
    for i in range(0, len(images), batch_size):
        x, y = images[i:i + batch_size].to(device), labels[i:i + batch_size].to(device)
        adv = attack_mod.autoattack(head, x, y, eps=eps / 255, n_classes=head.num_classes, seed=seed,
                                    version=spec.version, fast=fast)
        with torch.no_grad():
            out.append(head(adv).float().cpu())
    return torch.cat(out)


def plan_cells(*, datasets: list[str], models: list[str], eps_list: list[float], attacks_: list[str],
               strong_attacks: list[str], strong_eps_list: list[float], n: int, n_strong: int,
               strong_datasets: list[str] | None = None) -> list[tuple]:
    """Every (dataset, model, attack, eps, n) cell in run order; 'clean' (eps 0) first for each model and dataset.

    Strong attacks run on strong_datasets only (None or empty: every dataset)."""
    bad = [a for a in [*attacks_, *strong_attacks] if a not in ATTACKS]
    if bad:
        raise ValueError(f"unknown attack(s) {bad}; choose from {sorted(ATTACKS)}")
    if any(e < 0 for e in [*eps_list, *strong_eps_list]):
        raise ValueError("eps must be >= 0 (1/255 units)")
    if not 1 <= n_strong <= n:
        raise ValueError(f"need 1 <= n_strong <= n, got n_strong={n_strong}, n={n}")
    bad = [d for d in strong_datasets or [] if d not in datasets]
    if bad:
        raise ValueError(f"strong dataset(s) {bad} are not among the evaluated datasets {list(datasets)}")
    cells = []
    for d in datasets:
        strong = strong_attacks if not strong_datasets or d in strong_datasets else []
        for m in models:
            cells.append((d, m, "clean", 0.0, n))
            cells += [(d, m, a, float(e), n) for a in attacks_ for e in eps_list]
            cells += [(d, m, a, float(e), n_strong) for a in strong for e in strong_eps_list]
    return cells


@dataclass
class GridRun:
    """Rows of this run's cells (stored ones reused, the rest computed) and how many were computed."""

    rows: pd.DataFrame
    computed: int
    reused: int
    path: Path


def run_grid(models: dict, *, profile: str, datasets: list[str], eps_list: list[float], attacks: list[str],
             strong_attacks: list[str] = (), strong_eps_list: list[float] = (), n: int, n_strong: int | None = None,
             strong_datasets: list[str] | None = None, finetune_set: str | None = None, seed: int = 0,
             batch_size: int = 256, data_root: str = "", preprocess: Callable | None = None,
             device: torch.device | str = "cpu", path: str | Path | None = None,
             config: dict | None = None, base_model: str = "", rerun: bool = False, fast: bool = True,
             amp: bool = False, progress: bool = True) -> GridRun:
    """Evaluate every cell of models x datasets x attacks x eps (models: {name: suite.EvalModel}); see module doc.

    finetune_set: the dataset the models were fine-tuned on (marked zero_shot=False in the rows).
    strong_datasets: where the strong attacks run (None or empty: every dataset).
    path: the JSON-lines file (default results/05_evaluation.jsonl). rerun: recompute stored cells too.
    fast, amp: see attack_logits (recorded in each row; a stored cell is reused whatever they were).
    """
    n_strong = n if n_strong is None else n_strong
    cells = plan_cells(datasets=list(datasets), models=list(models), eps_list=list(eps_list), attacks_=list(attacks),
                       strong_attacks=list(strong_attacks), strong_eps_list=list(strong_eps_list), n=n,
                       n_strong=n_strong, strong_datasets=list(strong_datasets or []))
    path = Path(path) if path is not None else paths.RESULTS_DIR / "05_evaluation.jsonl"
    stored = {_key(r): r for r in load_rows(path)}
    image_fps = {name: model_fingerprint(m.image_model.clip.visual) for name, m in models.items()}
    config_json = json.dumps(config or {}, sort_keys=True)
    this_run, computed, reused = [], 0, 0
    bar = tqdm(total=len(cells), desc="evaluation cells", disable=not progress)
    for dataset in dict.fromkeys(c[0] for c in cells):
        ev = None
        for name, model in models.items():
            todo = [c for c in cells if c[0] == dataset and c[1] == name]
            head = text_fp = clean_mask = None
            for _, _, attack, eps, n_cell in todo:
                key = (profile, name, dataset, attack, eps, n_cell, seed)
                if ev is None:
                    ev = data_mod.load_eval_set(profile, dataset, n=n, seed=seed, data_root=data_root,
                                                preprocess=preprocess)
                if head is None:
                    head = head_for(model, ev, device=device)
                    text_fp = _tensor_fingerprint(head.class_embeddings)
                old = stored.get(key)
                if (old is not None and not rerun and old["image_fingerprint"] == image_fps[name]
                        and old["text_fingerprint"] == text_fp):
                    row = old
                    reused += 1
                else:
                    row = _compute_cell(head, ev, attack=attack, eps=eps, n_cell=n_cell, seed=seed,
                                        batch_size=batch_size, device=device, clean_mask=clean_mask, fast=fast,
                                        amp=amp)
                    row.update(profile=profile, model=name, model_label=model.label, dataset=dataset,
                               zero_shot=dataset != finetune_set, seed=seed, image_fingerprint=image_fps[name],
                               text_fingerprint=text_fp, text_side=model.text_side, base_model=base_model,
                               device=str(device), fast=fast, amp=amp, torch=torch.__version__,
                               code_version=code_version(),
                               config=config_json,
                               created=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
                    stored[key] = row
                    _write_rows(path, list(stored.values()))
                    computed += 1
                if attack == "clean":
                    clean_mask = unpack_mask(row["correct"], row["n"])
                this_run.append(row)
                bar.update(1)
                bar.set_postfix_str(f"{dataset} {name} {attack} {eps:g}", refresh=False)
    bar.close()
    return GridRun(pd.DataFrame(this_run), computed, reused, path)


def head_for(model, evalset, *, device: torch.device | str = "cpu") -> ZeroShotClassifier:
    """Zero-shot head (eval mode) of a suite.EvalModel on an EvalSet's classes, with the model's own text side."""
    emb = model.embed(evalset.classnames, evalset.templates)
    return ZeroShotClassifier(model.image_model, emb.to(device)).to(device).eval()


def _tensor_fingerprint(t: torch.Tensor) -> str:
    import hashlib

    return hashlib.sha256(t.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


def _compute_cell(head: ZeroShotClassifier, ev, *, attack: str, eps: float, n_cell: int, seed: int, batch_size: int,
                  device: torch.device | str, clean_mask: np.ndarray | None, fast: bool, amp: bool) -> dict:
    n_requested, n_cell = n_cell, min(n_cell, len(ev))
    x, y = ev.images[:n_cell], ev.labels[:n_cell]
    t0 = time.time()
    logits = attack_logits("pgd10" if attack == "clean" else attack, head, x, y, eps=eps, seed=seed,
                           batch_size=batch_size, device=device, fast=fast, amp=amp)
    seconds = time.time() - t0
    correct = logits.argmax(1) == y
    clean = correct.numpy() if attack == "clean" else clean_mask[:n_cell]
    return {"attack": attack, "attack_label": "clean" if attack == "clean" else ATTACKS[attack].label,
            "eps": eps, "n": n_cell, "n_requested": n_requested, "accuracy": float(correct.float().mean()),
            "clean_accuracy": float(np.mean(clean)), "correct": pack_mask(correct), "seconds": round(seconds, 3),
            "num_classes": head.num_classes}


# ----------------------------------------------------------------------------------------------- tables


def accuracy_table(rows: pd.DataFrame, *, attack: str, eps: float) -> pd.DataFrame:
    """Accuracy in % per model (rows) and dataset (columns), with the average over all datasets and over the
    zero-shot ones only (when the fine-tuning set is among them). attack 'clean' (eps 0) for clean accuracy."""
    sub = rows[(rows.attack == attack) & (rows.eps == eps)]
    if sub.empty:
        raise ValueError(f"no rows for attack {attack!r} at eps {eps}")
    table = sub.pivot_table(index="model_label", columns="dataset", values="accuracy", sort=False) * 100
    table["average"] = table.mean(axis=1)
    zs = sub[sub.zero_shot].pivot_table(index="model_label", columns="dataset", values="accuracy", sort=False)
    if zs.shape[1] < table.shape[1] - 1:
        table["average (zero-shot only)"] = zs.mean(axis=1) * 100
    table.index.name, table.columns.name = "model", None
    return table


def summary_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Per model, attack and eps: mean accuracy and mean clean accuracy (same images) over zero-shot datasets, in %."""
    zs = rows[rows.zero_shot & (rows.attack != "clean")]
    g = zs.groupby(["model_label", "attack_label", "eps", "n"], sort=False)
    out = pd.DataFrame({"robust": g.accuracy.mean() * 100, "clean": g.clean_accuracy.mean() * 100,
                        "datasets": g.dataset.nunique()}).reset_index()
    return out.rename(columns={"model_label": "model", "attack_label": "attack"})


def published_results() -> pd.DataFrame:
    """Published numbers we compare with (PMG-AFT Tables 1-3, 8-9; TeCoA README), each with its source, in %."""
    return pd.read_csv(paths.PACKAGE_DIR / "published" / "published_results.csv")


# ----------------------------------------------------------------------------------------------- sanity


def sanity_checks(rows: pd.DataFrame, *, tolerance: int = 0) -> pd.DataFrame:
    """The standard signs of a sound evaluation, checked on the stored per-sample results of a grid run.

    Counts in samples on identical images (prefixes): accuracy never rises with eps (clean = eps 0); PGD-100 is
    never above PGD-10; AutoAttack is never above any PGD at the same eps; every row's clean accuracy is the clean
    cell's on the same images. tolerance: samples of slack allowed per comparison (0 = exact).
    """
    out = []
    by_cell = {(r.model, r.dataset, r.attack, r.eps): r for r in rows.itertuples(index=False)}
    clean = {(r.model, r.dataset): r for r in rows[rows.attack == "clean"].itertuples(index=False)}

    def count(r, n):
        return int(unpack_mask(r.correct, r.n)[:n].sum())

    excess = []  # accuracy vs eps
    for (m, d, a), g in rows[rows.attack != "clean"].groupby(["model", "dataset", "attack"], sort=False):
        g = g.sort_values("eps")
        n = int(g.n.min())
        seq = [count(clean[(m, d)], n), *[count(r, n) for r in g.itertuples(index=False)]]
        excess += [b - a_ for a_, b in zip(seq, seq[1:])]
    out.append(_check("accuracy never rises with eps (clean = eps 0)", excess, tolerance))
    excess = []  # more steps
    for r in rows[rows.attack == "pgd100"].itertuples(index=False):
        ref = by_cell.get((r.model, r.dataset, "pgd10", r.eps))
        if ref is not None and ref.n >= r.n:
            excess.append(count(r, r.n) - count(ref, r.n))
    out.append(_check("PGD-100 never above PGD-10 (same images, same eps)", excess, tolerance))
    excess = []  # AutoAttack vs PGD
    for aa in ("aa", "aa_full"):
        for r in rows[rows.attack == aa].itertuples(index=False):
            for ref_attack in ("pgd10", "pgd100", "cw10"):
                ref = by_cell.get((r.model, r.dataset, ref_attack, r.eps))
                if ref is not None and ref.n >= r.n:
                    excess.append(count(r, r.n) - count(ref, r.n))
    out.append(_check("AutoAttack never above PGD-10 / PGD-100 / CW (same images, same eps)", excess, tolerance))
    excess = [abs(round(r.clean_accuracy * r.n) - count(clean[(r.model, r.dataset)], r.n))
              for r in rows.itertuples(index=False)]
    out.append(_check("clean accuracy beside each cell = the clean cell's on the same images", excess, 0))
    return pd.DataFrame(out)


def _check(name: str, excess: list[int], tolerance: int) -> dict:
    worst = max(excess) if excess else 0
    return {"check": name, "comparisons": len(excess), "violations": sum(e > tolerance for e in excess),
            "worst_excess_samples": worst, "tolerance_samples": tolerance,
            "passed": worst <= tolerance}  # no comparisons (attack not run): nothing violated


def attack_checks(head: ZeroShotClassifier, images: torch.Tensor, labels: torch.Tensor, *, eps: float,
                  large_eps: float = 32.0, steps: int = 10, batch_size: int = 256, seed: int = 0,
                  device: torch.device | str = "cpu", near_zero: float = 0.05, agree_samples: int = 2,
                  fast: bool = True) -> pd.DataFrame:
    """Live checks of the attack on one head and images (eps in 1/255): eps 0 is clean; a very large eps drives
    accuracy to about zero (<= near_zero); our PGD (fast path if fast) agrees with torchattacks' PGD within
    agree_samples samples (the two draw different random starts, so exact equality is not expected)."""
    clean = metrics.predict_logits(head, images, labels, eps=0.0, batch_size=batch_size, device=device)
    zero = attack_mod.pgd_attack(head, images[:batch_size].to(device), labels[:batch_size].to(device), eps=0.0,
                              steps=steps)
    eps0 = metrics.predict_logits(head, images, labels, eps=0.0, steps=steps, batch_size=batch_size, device=device,
                                  seed=seed)
    eps0_ok = bool(torch.equal(clean, eps0) and torch.equal(zero.cpu(), images[:batch_size]))
    big = metrics.predict_logits(head, images, labels, eps=large_eps / 255, steps=steps,
                                 alpha=2.5 * large_eps / 255 / steps, batch_size=batch_size, device=device, seed=seed,
                                 fast=fast)
    big_acc = metrics.accuracy(big, labels)
    ours = metrics.predict_logits(head, images, labels, eps=eps / 255, steps=steps, batch_size=batch_size,
                                  device=device, seed=seed, fast=fast)
    ref = torch.cat([head(attack_mod.torchattacks_pgd(head, images[i:i + batch_size].to(device),
                                                   labels[i:i + batch_size].to(device), eps=eps / 255, steps=steps,
                                                   seed=seed)).detach().cpu()
                     for i in range(0, len(images), batch_size)])
    n_ours, n_ref = int((ours.argmax(1) == labels).sum()), int((ref.argmax(1) == labels).sum())
    n = len(labels)
    return pd.DataFrame([
        {"check": "eps 0 returns the clean images and clean logits", "value": float(eps0_ok), "threshold": 1.0,
         "passed": eps0_ok, "detail": f"clean accuracy {metrics.accuracy(clean, labels):.3f}"},
        {"check": f"PGD-{steps} at eps {large_eps:g}/255 drives accuracy to about zero", "value": big_acc,
         "threshold": near_zero, "passed": big_acc <= near_zero, "detail": f"step 2.5 eps / steps, n={n}"},
        {"check": f"our PGD-{steps} agrees with torchattacks' PGD at eps {eps:g}/255",
         "value": abs(n_ours - n_ref) / n, "threshold": agree_samples / n, "passed": abs(n_ours - n_ref) <= agree_samples,
         "detail": f"ours {n_ours / n:.3f}, torchattacks {n_ref / n:.3f}, n={n}"},
    ])


def margin_findings(model, *, profile: str, dataset: str, n: int, eps_small: float, eps_large: float, steps: int = 10,
                    batch_size: int = 256, seed: int = 0, data_root: str = "", preprocess: Callable | None = None,
                    device: torch.device | str = "cpu") -> dict[str, float]:
    """Findings 1 and 2 of 01/02 for one model (suite.EvalModel): margin offset eps_small -> eps_large (1/255) and
    the correlation of per-pair margin (at eps_large) with text similarity."""
    ev = data_mod.load_eval_set(profile, dataset, n=n, seed=seed, data_root=data_root, preprocess=preprocess)
    head = head_for(model, ev, device=device)
    sweep, logits = metrics.margin_sweep(head, ev.images, ev.labels, eps_list=[eps_small, eps_large], steps=steps,
                                         batch_size=batch_size, device=device, seed=seed)
    off = analysis.margin_offsets(sweep).iloc[0]
    pairs = analysis.pair_table(metrics.pair_margins(logits[eps_large], ev.labels), head.class_embeddings,
                                ev.classnames)
    corr = analysis.correlate(pairs.similarity, pairs.margin)
    return {"offset_mean": float(off.offset_mean), "offset_std": float(off.offset_std),
            "offset_r": float(off.pearson_r), "pearson_r": corr["pearson_r"], "spearman_rho": corr["spearman_rho"],
            f"accuracy_eps{eps_small:g}": float(sweep[sweep.eps == eps_small].correct.mean()),
            f"accuracy_eps{eps_large:g}": float(sweep[sweep.eps == eps_large].correct.mean())}


def eps_curve(rows: pd.DataFrame, *, attack: str) -> pd.DataFrame:
    """Mean accuracy over zero-shot datasets per model and eps (clean as eps 0): columns model, eps, accuracy."""
    zs = rows[rows.zero_shot]
    clean = zs[zs.attack == "clean"].assign(eps=0.0)
    sub = pd.concat([clean, zs[zs.attack == attack]])
    out = sub.groupby(["model_label", "eps"], sort=False).accuracy.mean().reset_index()
    return out.rename(columns={"model_label": "model"})


def compare_published(published: pd.DataFrame, ours: pd.DataFrame | None = None) -> pd.DataFrame:
    """Published dataset averages (%) by source, method, metric, attack, eps; with ours beside when given.

    ours: grid.summary_table of a paper-profile run (its 'robust'/'clean' means are over the zero-shot datasets;
    the published averages include TinyImageNet, so compare with care).
    """
    avg = published[published.dataset == "average"]
    table = avg.set_index(["method", "metric", "attack", "eps", "source", "table"])[["value"]]
    table = table.rename(columns={"value": "published"}).sort_index()
    if ours is not None and not ours.empty:
        names = {"zero-shot CLIP": "CLIP", "TeCoA": "TeCoA", "PMG-AFT": "PMG-AFT", "FT-Standard": "FT-Standard"}
        mine = {}
        for r in ours.itertuples(index=False):
            if r.model in names and r.attack.startswith(("PGD-10", "AutoAttack")):
                attack = "PGD-10" if r.attack == "PGD-10" else "AutoAttack (standard)"
                mine[(names[r.model], "robust", attack, float(r.eps))] = r.robust
                mine[(names[r.model], "clean", "none", 0.0)] = r.clean
        table["ours"] = [mine.get((m, metric, a, float(e))) for m, metric, a, e, *_ in table.index]
    return table
