"""The full evaluation of 05: (model, dataset, attack, eps) cells, first-N, one JSON line per cell, resumable.

Cells are computed by the one runner, :func:`nbhelpers.evaluation.evaluate`; this module adds 05's store on top, the
shared :class:`nbhelpers.store.JsonlStore` keyed by :data:`KEY_FIELDS`. Every cell is one row of
``results/05_evaluation.jsonl`` holding what varies by cell: its accuracy, the clean accuracy of the same images, the
per-sample correctness (hex of the packed bits, so any prefix of a larger run can be re-scored), the sample count,
the seconds it took, the identities of its image tower and text side (``image_id``, ``text_id``), their computed
fingerprints (provenance), and the id of the run that computed it. What is constant over a run (config, code
version, torch, device, base model, fast, amp, when) is written once per run to ``results/05_evaluation.meta.json``
(``runs``), when the run stores its first cell. Each computed cell is appended as one line, flushed to disk, so an
interrupted evaluation loses at most the cell in flight; a rerun reuses the stored cells and computes only the rest.

**When a stored cell is reused.** Its key fields must equal the cell's, and then each side (image tower, text side)
must match, side by side:

- the model's id and the row's id both non-empty: they must be equal (the computed fingerprints are not looked at,
  so a model rebuilt on another CPU, whose weights differ in their last bits, reuses the cell);
- the row has no id for the side yet (rows stored before ids existed): the row's fingerprint must equal the model's
  computed one; the row is then *adopted*: it gets the model's id (appended as its new version, the store is
  compacted once at the end of the run), so after one run on the machine that made it the store is keyed by
  identity and reusable on any machine;
- the model has no id for the side (code that sets none): the fingerprints must be equal, as before ids existed.

A row whose id differs from the model's is never reused (another training configuration or text side).
``rerun=True`` recomputes every cell. ``python -m nbhelpers.grid --status`` counts the rows keyed by identity
(current) and the rest; ``--compact`` and ``--prune`` rewrite the store atomically.

Attacks (eps in 1/255 units everywhere here): PGD-10 and PGD-100 (cross-entropy, random start, step 1/255),
CW-margin PGD-10, and AutoAttack's two gradient attacks of the standard version (APGD-CE, APGD-T; torchattacks)
or torchattacks' full standard AutoAttack. Cheap attacks run on the first n images at every eps; strong ones on
the first n_strong of the same images at the strong eps.
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from nbhelpers import analysis, dispatch, metrics, paths, results
from nbhelpers import attacks as attack_mod
from nbhelpers.data import load_eval_set
from nbhelpers.evaluation import EvalModel, evaluate
from nbhelpers.config import cli_parser
from nbhelpers.store import JsonlStore
from nbhelpers.utils import content_key, unpack_mask
from nbhelpers.zeroshot import ZeroShotClassifier, build_head


KEY_FIELDS = ("profile", "model", "dataset", "protocol", "sampling", "attack", "eps", "n_requested", "seed")
RUN_FIELDS = ("config", "base_model", "model_fingerprint", "code_version", "torch", "device", "fast", "amp",
              "created")  # constant over one run: stored once per run in the meta file, not on every row
# each side of a cell: its identity (set by the code that builds the model) and its computed fingerprint
SIDES = (("image_id", "image_fingerprint"), ("text_id", "text_fingerprint"))
ID_FIELDS = tuple(side[0] for side in SIDES)
# The store's format, written to its meta file and read back, never guessed from the fields of a row:
#   1: no 'format_version' in the meta file (or no meta file). Rows of its first layout carry the run stamp on
#      every row (they hold 'code_version'); later rows of format 1 may carry the model's configuration tag under
#      the name 'config' (which a run stamp also uses: issue 17), renamed 'model_config' on reading.
#   2: rows hold only their cell's fields plus 'run'; the model's configuration tag is 'model_config'.
#   3: rows also hold 'protocol' and 'sampling' (how the images were read and chosen, data.EvalSet), part of a cell's
#      key. Rows of formats 1-2 were made by code that had one way each: "mini" / "first" on the mini profile, on
#      the paper profile open_clip's transform ("clip") on the first n items ("first").
#   Rows may carry 'image_id' / 'text_id' (absent or empty: not keyed by identity yet), and a key may appear on more
#   than one line, the last one winning (an adopted or recomputed cell): a reader of format 3 that takes the last
#   row of each key reads both, so neither changed the format.
STORE_FORMAT_VERSION = 3
STORE_DESCRIPTION = ("JSON lines, one cell per line; each row's 'run' names its stamp in 'runs'; the last line of a "
                     "key wins")
_FORMAT_2_READING = {"mini": {"protocol": "mini", "sampling": "first"},
                     "paper": {"protocol": "clip", "sampling": "first"}}


def open_store(path: str | Path) -> JsonlStore:
    """05's store at path (the shared JSON-lines store, keyed by KEY_FIELDS, with its meta file)."""
    return JsonlStore(path, key_fields=KEY_FIELDS, format_version=STORE_FORMAT_VERSION,
                      description=STORE_DESCRIPTION)


def load_rows(path: str | Path) -> list[dict]:
    """Rows of a JSON-lines results file as stored, every line (empty if it does not exist)."""
    return JsonlStore(path).rows()


def store_format(path: str | Path) -> int:
    """The format version of 05's store at path, from its meta file (1 when the meta file does not declare one)."""
    return open_store(path).stored_format()


def _convert(rows: list[dict], runs: dict[str, dict], version: int) -> None:
    """Convert rows of format `version` (and their runs) to the current format, in place (see STORE_FORMAT_VERSION)."""
    if version == STORE_FORMAT_VERSION:
        return
    for row in rows:
        for field, value in _FORMAT_2_READING[row["profile"]].items():
            row.setdefault(field, value)
    if version == 2:
        return
    for row in rows:
        if "code_version" not in row:
            if "config" in row:
                row["model_config"] = row.pop("config")
            continue
        legacy = {f: row.pop(f) for f in RUN_FIELDS if f in row}
        if isinstance(legacy.get("config"), str):
            legacy["config"] = json.loads(legacy["config"])
        created = legacy.pop("created", "")
        run_id = "legacy-" + content_key(legacy)
        earliest = min(created, runs.get(run_id, {}).get("created", created))
        runs[run_id] = {**legacy, "created": earliest}
        row["run"] = run_id


def load_store(path: str | Path) -> tuple[list[dict], dict[str, dict]]:
    """(rows, runs) of 05's store: the last row of each cell (in the order cells were first stored) and the run
    stamps of its meta file, by run id.

    The current format is read as stored; older ones are converted (see STORE_FORMAT_VERSION): format 1 rows
    that carry the run stamp ('code_version' on the row) get a run stamp 'legacy-<hash>' made of their
    run-constant fields, and a 'config' on any other row is the model's configuration tag, now 'model_config';
    rows of formats 1-2 get the protocol and sampling their code used.
    """
    store = open_store(path)
    version = store.stored_format()
    runs = store.runs()
    rows = store.rows()
    _convert(rows, runs, version)
    latest: dict[tuple, dict] = {}
    for row in rows:
        latest[store.key(row)] = row
    return list(latest.values()), runs


def reuse(stored: Mapping, cell: Mapping) -> str | None:
    """How a stored row of a cell's key serves it (the rule of the module docstring): 'reuse', 'adopt' (reuse once
    the row takes the model's ids), or None (compute it). A row of another random-start scheme (``attack_start``,
    absent = "legacy") is never reused."""
    if stored.get("attack_start", "legacy") != cell.get("attack_start", "legacy"):
        return None
    adopt = False
    for id_field, fp_field in SIDES:
        mine, theirs = cell.get(id_field) or "", stored.get(id_field) or ""
        if mine and theirs:
            if mine != theirs:
                return None
        elif stored.get(fp_field) != cell.get(fp_field):
            return None
        elif mine:
            adopt = True
    return "adopt" if adopt else "reuse"


def is_current(row: Mapping) -> bool:
    """Whether a stored row is keyed by identity (both ids set): reusable on any machine by a model with its ids."""
    return all(row.get(f) for f in ID_FIELDS)


def store_status(path: str | Path) -> dict[str, object]:
    """Counts of 05's store: lines, cells (keys), superseded lines, current (cells keyed by identity) and other
    (cells without ids: reused only where their fingerprints are reproduced), a cut last line, format, runs."""
    store = open_store(path)
    status = store.status()
    rows, runs = load_store(path)
    current = sum(is_current(r) for r in rows)
    unnamed = sorted({str(r.get("run")) for r in rows} - set(runs))
    return {**status, "current": current, "other": len(rows) - current, "runs": len(runs),
            "rows naming no stored run": len([r for r in rows if str(r.get("run")) in unnamed])}


def compact_store(path: str | Path, *, keep: Callable[[Mapping], bool] | None = None) -> int:
    """Rewrite 05's store atomically in the current format: the last row of each cell (those keep() takes, when
    given), and the stamps of the runs they name; returns how many lines went."""
    store = open_store(path)
    lines = len(store.rows())
    rows, runs = load_store(path)
    kept = [r for r in rows if keep is None or keep(r)]
    if len(kept) < lines or store.stored_format() != STORE_FORMAT_VERSION or store.status()["cut_tail"]:
        store.rewrite(kept, runs=runs)
    return lines - len(kept)


def prune_store(path: str | Path) -> int:
    """Drop the cells not keyed by identity ('other' in store_status) and superseded lines; returns how many lines
    went. Run 05 first, so that the cells of the current models are adopted (given their ids) and stay."""
    return compact_store(path, keep=is_current)


@dataclass
class GridRun:
    """Rows of this run's cells (stored ones reused, the rest computed), how many were computed, reused (of them,
    adopted: given the model's ids), and where."""

    rows: pd.DataFrame
    computed: int
    reused: int
    path: Path
    adopted: int = 0

    @property
    def meta_path(self) -> Path:
        """The meta file beside the JSON lines (run stamps)."""
        return results.meta_path(self.path)


def run_grid(models: dict[str, EvalModel], *, profile: str, datasets: list[str], eps_list: list[float],
             attacks: list[str], strong_attacks: list[str] = (), strong_eps_list: list[float] = (), n: int,
             n_strong: int | None = None, strong_datasets: list[str] | None = None, finetune_set: str | None = None,
             seed: int = 0, batch_size: int = 256, data_root: str = "", preprocess: Callable | None = None,
             device: torch.device | str = "cpu", path: str | Path | None = None, config: dict | None = None,
             base_model: str = "", rerun: bool = False, fast: bool = True, amp: bool = False,
             sampling: str | None = None, progress: bool = True, shard: str | Path | None = None,
             start: str = "legacy") -> GridRun:
    """Evaluate every cell of models x datasets x attacks x eps with evaluation.evaluate, through 05's store.

    finetune_set: the dataset the models were fine-tuned on (marked zero_shot=False in the rows).
    strong_datasets: where the strong attacks run (None or empty: every dataset).
    path: the JSON-lines file (default results/05_evaluation.jsonl). rerun: recompute stored cells too.
    fast, amp: see evaluation.attack_logits (recorded in the run stamp; a stored cell is reused whatever they were).
    sampling: the paper subset rule (None: paper_data.DEFAULT_SAMPLING); the protocol is the preprocess's.
    start: our PGD's random-start scheme (attacks.START_SCHEMES; on the rows unless "legacy").
    Stored cells are reused by the rule of the module docstring (ids, else fingerprints; rows without ids adopted).
    shard: a dispatched job's own file (nbhelpers.dispatch): the store at path and its shards are only read (a cell
    in a shard counts as stored), computed and adopted rows go to the shard with its run stamp, nothing is
    compacted; the parent merges the shards into the store in plan order.
    """
    path = Path(path) if path is not None else paths.RESULTS_DIR / "05_evaluation.jsonl"
    store = open_store(path)
    rows, runs = load_store(path)  # refuses a format this code cannot read, before any work
    if rows and store.stored_format() != STORE_FORMAT_VERSION and shard is None:  # older format: rewrite it
        store.rewrite(rows, runs=runs)
    stored = {store.key(r): r for r in rows}
    out = store
    if shard is not None:  # a job: earlier shards count as stored, its own rows go to its shard
        for f in dispatch.shard_files(path):
            stored.update({store.key(r): r for r in load_store(f)[0]})
        out = dispatch.open_shard(store, shard)
    stamp = results.provenance_stamp(config=config or {}, model=base_model, device=str(device), fast=fast, amp=amp)
    run_id = content_key(stamp)
    counts = {"computed": 0, "reused": 0, "adopted": 0, "replaced": 0}

    def lookup(cell: dict) -> dict | None:
        key = store.key(cell)
        old = stored.get(key)
        how = None if old is None or rerun else reuse(old, cell)
        if how is None:
            return None
        if how == "adopt":
            old = {**old, **{f: cell[f] for f in ID_FIELDS if cell.get(f) and not old.get(f)}}
            out.append(old, replace=True)
            stored[key] = old
            counts["adopted"] += 1
        counts["reused"] += 1
        return old

    def keep(row: dict) -> dict:
        if not counts["computed"]:
            out.add_run(run_id, stamp)  # once per run, before its first row
        row = {**row, "run": run_id}
        key = store.key(row)
        counts["replaced"] += key in stored
        out.append(row, replace=True)
        stored[key] = row
        counts["computed"] += 1
        return row

    this_run = evaluate(models, profile=profile, datasets=datasets, attacks=attacks, eps_list=eps_list, n=n,
                        strong_attacks=strong_attacks, strong_eps_list=strong_eps_list, n_strong=n_strong,
                        strong_datasets=strong_datasets, finetune_set=finetune_set, seed=seed,
                        batch_size=batch_size, data_root=data_root, preprocess=preprocess, device=device, fast=fast,
                        amp=amp, progress=progress, sampling=sampling, lookup=lookup, store=keep, start=start)
    if (counts["adopted"] or counts["replaced"]) and shard is None:
        compact_store(path)  # once per run: each cell's last row in place of its older one
    return GridRun(this_run, counts["computed"], counts["reused"], path, counts["adopted"])


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


def margin_findings(model: EvalModel, *, profile: str, dataset: str, n: int, eps_small: float, eps_large: float,
                    steps: int = 10, batch_size: int = 256, seed: int = 0, data_root: str = "",
                    preprocess: Callable | None = None, device: torch.device | str = "cpu") -> dict[str, float]:
    """Findings 1 and 2 of 01/02 for one model: margin offset eps_small -> eps_large (1/255; analysis.offset_between)
    and the correlation of per-pair margin (at eps_large) with text similarity (analysis.correlate)."""
    ev = load_eval_set(profile, dataset, n=n, seed=seed, data_root=data_root, preprocess=preprocess)
    head = build_head(model.image_model, model.embed(ev.classnames, ev.templates), device=device)
    sweep, logits = metrics.margin_sweep(head, ev.images, ev.labels, eps_list=[eps_small, eps_large], steps=steps,
                                         batch_size=batch_size, device=device, seed=seed)
    off = analysis.offset_between(sweep, eps_small=eps_small, eps_large=eps_large)
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
    the published averages include TinyImageNet, so compare with care). A released checkpoint evaluated here
    (label "<method> (released)", e.g. "TeCoA (released)") fills the column 'ours (released checkpoint)': our
    measurement of the very weights the paper reports on, beside the printed number.
    """
    avg = published[published.dataset == "average"]
    table = avg.set_index(["method", "metric", "attack", "eps", "source", "table"])[["value"]]
    table = table.rename(columns={"value": "published"}).sort_index()
    if ours is not None and not ours.empty:
        names = {"zero-shot CLIP": "CLIP", "TeCoA": "TeCoA", "PMG-AFT": "PMG-AFT", "FT-Standard": "FT-Standard"}
        methods = set(avg.method)
        mine: dict[tuple, float] = {}
        released: dict[tuple, float] = {}
        for r in ours.itertuples(index=False):
            if not r.attack.startswith(("PGD-10", "AutoAttack")):
                continue
            head, _, tail = r.model.rpartition(" (")
            target, method = ((mine, names[r.model]) if r.model in names else
                              (released, head) if tail == "released)" and head in methods else (None, None))
            if target is None:
                continue
            attack = "PGD-10" if r.attack == "PGD-10" else "AutoAttack (standard)"
            target[(method, "robust", attack, float(r.eps))] = r.robust
            target[(method, "clean", "none", 0.0)] = r.clean
        table["ours"] = [mine.get((m, metric, a, float(e))) for m, metric, a, e, *_ in table.index]
        if released:
            table["ours (released checkpoint)"] = [released.get((m, metric, a, float(e)))
                                                   for m, metric, a, e, *_ in table.index]
    return table


def build_parser() -> argparse.ArgumentParser:
    """The store upkeep CLI's parser."""
    ap = cli_parser("status, compaction or pruning of 05's evaluation store", prog="python -m nbhelpers.grid")
    ap.add_argument("path", nargs="?", default=str(paths.RESULTS_DIR / "05_evaluation.jsonl"),
                    help="the evaluation store")
    action = ap.add_mutually_exclusive_group()
    action.add_argument("--status", action="store_true", help="print the store's counts, change nothing (also without a flag)")
    action.add_argument("--compact", action="store_true",
                        help="rewrite the store with the last row of each cell only, in the current format")
    action.add_argument("--prune", action="store_true",
                        help="also drop the cells not keyed by identity (no image_id/text_id: run 05 first)")
    return ap


def main(argv: list[str] | None = None) -> int:
    """CLI: python -m nbhelpers.grid [--status | --compact | --prune] [path] (default results/05_evaluation.jsonl)."""
    ap = build_parser()
    args = ap.parse_args(argv)
    if not Path(args.path).is_file():
        ap.error(f"no store at {args.path}")
    dropped = prune_store(args.path) if args.prune else compact_store(args.path) if args.compact else 0
    print(json.dumps({**store_status(args.path), "dropped_lines": dropped,
                      **dispatch.shard_status(open_store(args.path))}, indent=1))  # rows of jobs not merged yet
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
