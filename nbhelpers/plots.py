"""One figure style and one save helper: figures/NN_name.png and .pdf, written atomically."""
from __future__ import annotations

import re
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt

from nbhelpers import paths
from nbhelpers.utils import atomic_path

_NAME = re.compile(r"^\d\d_[a-z0-9_]+$")


def use_style() -> None:
    """Apply the project's shared figure style (seaborn whitegrid, colour-blind palette)."""
    import seaborn as sns

    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    matplotlib.rcParams.update({"figure.dpi": 100, "savefig.dpi": 150, "savefig.bbox": "tight",
                                "axes.titlesize": "medium", "figure.autolayout": False})


def save_figure(fig: plt.Figure, name: str, *, directory: str | Path | None = None) -> list[Path]:
    """Save fig as <figures>/<name>.png and .pdf (name like '01_margin_offset'); returns the paths."""
    if not _NAME.match(name):
        raise ValueError(f"figure name {name!r} must look like 'NN_lower_case_name' (notebook number first)")
    out_dir = Path(directory) if directory is not None else paths.FIGURES_DIR
    written = []
    for ext in ("png", "pdf"):
        target = out_dir / f"{name}.{ext}"
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format=ext, metadata={"CreationDate": None} if ext == "pdf" else None)
        written.append(target)
    return written


def _scatter_fit(ax: plt.Axes, x, y, *, label: str | None = None, s: float = 6) -> None:
    """Scatter with a least-squares line (scipy.stats.linregress)."""
    import numpy as np
    from scipy import stats

    ax.scatter(x, y, s=s, alpha=0.35, linewidths=0, label=label)
    fit = stats.linregress(x, y)
    xs = np.linspace(np.min(x), np.max(x), 50)
    ax.plot(xs, fit.intercept + fit.slope * xs, color="black", lw=1.2,
            label=f"fit: y = {fit.slope:.2f} x {fit.intercept:+.2f} (r = {fit.rvalue:.2f})")


def plot_margin_offset(sweep, offsets, *, eps_small: float, eps_large: float) -> plt.Figure:
    """Finding 1: margin distributions per eps, small-vs-large eps scatter with fit, offset per eps pair +- std."""
    import seaborn as sns

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    sns.kdeplot(data=sweep, x="margin", hue="eps", palette="viridis", common_norm=False, ax=axes[0], warn_singular=False)
    axes[0].axvline(0, color="grey", lw=0.8)
    axes[0].set(title="logit margin per eps (1/255)", xlabel="margin = true logit - best other")
    wide = sweep.pivot(index="sample", columns="eps", values="margin")
    _scatter_fit(axes[1], wide[eps_small].to_numpy(), wide[eps_large].to_numpy())
    lo, hi = float(wide[[eps_small, eps_large]].min().min()), float(wide[[eps_small, eps_large]].max().max())
    axes[1].plot([lo, hi], [lo, hi], ls=":", color="grey", lw=1, label="y = x")
    axes[1].set(title=f"per-sample margin: eps {eps_small:g} vs {eps_large:g}",
                xlabel=f"margin at eps {eps_small:g}/255", ylabel=f"margin at eps {eps_large:g}/255")
    axes[1].legend(fontsize="small")
    base = offsets[offsets.eps_small == offsets.eps_small.min()]
    axes[2].errorbar(base.eps_large, base.offset_mean, yerr=base.offset_std, marker="o", capsize=4,
                     label=f"offset from eps {offsets.eps_small.min():g} (mean +- std)")
    axes[2].set(title="margin offset vs eps", xlabel="large eps (1/255)", ylabel="margin(large) - margin(small)")
    axes[2].legend(fontsize="small")
    fig.tight_layout()
    return fig


def plot_margin_similarity(table, corr: dict, *, title: str, paper: tuple[float, float] | None = None) -> plt.Figure:
    """Finding 2: per class pair, adversarial margin vs text cosine similarity, with fit and correlations."""
    fig, ax = plt.subplots(figsize=(6.5, 4.8))
    _scatter_fit(ax, table["similarity"].to_numpy(), table["margin"].to_numpy(), s=8)
    text = f"ours: Pearson {corr['pearson_r']:.3f}, Spearman {corr['spearman_rho']:.3f} (n = {corr['n']} pairs)"
    if paper is not None:
        text += f"\npaper (CLIP): Pearson {paper[0]:.3f}, Spearman {paper[1]:.3f}"
    ax.text(0.02, 0.02, text, transform=ax.transAxes, fontsize="small", va="bottom",
            bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"})
    ax.set(title=title, xlabel="cosine similarity of the two class text embeddings",
           ylabel="mean adversarial margin z_true - z_other")
    ax.legend(fontsize="small", loc="upper right")
    fig.tight_layout()
    return fig


def offset_explorer(sweep):
    """ipywidgets slider over the larger eps: redraws the small-vs-large scatter (a static figure under papermill)."""
    import ipywidgets as widgets

    eps_values = sorted(sweep["eps"].unique())
    small = eps_values[0] if eps_values[0] > 0 else eps_values[1]
    choices = [e for e in eps_values if e > small]
    wide = sweep.pivot(index="sample", columns="eps", values="margin")

    def draw(eps: float) -> None:
        fig, ax = plt.subplots(figsize=(5, 4))
        _scatter_fit(ax, wide[small].to_numpy(), wide[eps].to_numpy())
        ax.set(xlabel=f"margin at eps {small:g}/255", ylabel=f"margin at eps {eps:g}/255")
        ax.legend(fontsize="small")
        plt.show()

    return widgets.interactive(draw, eps=widgets.SelectionSlider(options=choices, value=choices[-1],
                                                                 description="eps (/255)"))


def plot_samples(images, captions: list[str], *, ncol: int = 6) -> plt.Figure:
    """Grid of images (N, 3, S, S) in [0, 1] with their captions as titles."""
    n = len(captions)
    nrow = (n + ncol - 1) // ncol
    fig, axes = plt.subplots(nrow, ncol, figsize=(2.3 * ncol, 2.5 * nrow))
    for ax, img, cap in zip(axes.flat, images, captions):
        ax.imshow(img.permute(1, 2, 0).numpy(), interpolation="nearest")
        ax.set_title("\n".join(_wrap(cap, 24)), fontsize=7.5)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    return fig


def _wrap(text: str, width: int) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width) or [""]


def plot_accuracy_vs_eps(grid, *, hue: str = "task", title: str = "") -> plt.Figure:
    """Accuracy (%) against eps (1/255) per group, with each group's chance level dotted."""
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    data = grid.assign(accuracy_pct=100 * grid["accuracy"])
    sns.lineplot(data=data, x="eps", y="accuracy_pct", hue=hue, marker="o", ax=ax)
    if "chance" in grid:
        for _, c in grid.groupby(hue)["chance"].first().items():
            ax.axhline(100 * c, ls=":", lw=0.8, color="grey")
    ax.set(title=title, xlabel="eps (1/255), PGD", ylabel="accuracy (%)", ylim=(0, 100))
    fig.tight_layout()
    return fig


def plot_text_structure(distances: dict, summary, *, dataset: str) -> plt.Figure:
    """03: histogram of inter-class text distances per text side, and consistency rho vs mean distance."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2))
    for name, d in distances.items():
        axes[0].hist(d, bins=30, histtype="step", lw=1.6, label=name)
    axes[0].set(title=f"inter-class text distances ({dataset})", xlabel="Euclidean distance of unit embeddings",
                ylabel="class pairs")
    axes[0].legend(fontsize="small")
    for name, row in summary.iterrows():
        axes[1].scatter(row["mean_distance"], row["consistency_rho"], s=70, label=name)
    axes[1].legend(fontsize="small")
    axes[1].set(title="spread vs semantic consistency (mean over datasets)", xlabel="mean inter-class distance",
                ylabel="Spearman rho with pre-trained similarities")
    fig.tight_layout()
    return fig


def plot_pairing_accuracy(grid, *, eps: float) -> plt.Figure:
    """03: mean clean and robust zero-shot accuracy (%) per text side, one panel per image encoder."""
    import seaborn as sns

    mean = grid.groupby(["image", "text", "eps"], sort=False).accuracy.mean().reset_index()
    mean["setting"] = mean["eps"].map(lambda e: "clean" if e == 0 else f"PGD eps {e:g}/255")
    mean["accuracy (%)"] = 100 * mean["accuracy"]
    g = sns.catplot(data=mean, x="text", y="accuracy (%)", hue="setting", col="image", kind="bar", height=4,
                    aspect=1.4)
    g.set_xticklabels(rotation=20, ha="right")
    g.figure.suptitle(f"zero-shot accuracy, mean over datasets (eps {eps:g}/255)", y=1.03)
    return g.figure


def plot_training_curves(histories: dict, *, window: int = 10) -> plt.Figure:
    """Training loss per step (rolling mean over `window` steps) for each method."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, h in histories.items():
        ax.plot(h["step"], h["loss"].rolling(window, min_periods=1).mean(), label=name)
    ax.set(title=f"training loss (rolling mean over {window} steps)", xlabel="step", ylabel="loss")
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def plot_tradeoff(summary, *, attack: str, zoom_points: float = 5.0) -> plt.Figure:
    """05: robust vs clean accuracy (%) per model, one column per eps (as PMG-AFT Fig. 5): the top row every model,
    the bottom row zoomed on the models within `zoom_points` of the best clean accuracy (where the compared methods
    sit), each point labelled; summary from grid.summary_table."""
    import seaborn as sns

    data = summary[summary.attack == attack]
    eps_values = sorted(data.eps.unique())
    models = list(dict.fromkeys(data.model))
    markers = dict(zip(models, ["o", "X", "s", "P", "D", "*", "^", "v", "<", ">", "p", "h", "H", "d", "8"] * 3))
    fig, axes = plt.subplots(2, len(eps_values), figsize=(6.0 * len(eps_values) + 1.0, 7.6), squeeze=False)
    for col, e in enumerate(eps_values):
        sub = data[data.eps == e]
        top, bottom = axes[0][col], axes[1][col]
        for ax in (top, bottom):
            sns.scatterplot(data=sub, x="clean", y="robust", hue="model", style="model", markers=markers,
                            hue_order=models, style_order=models, s=80, ax=ax, legend=ax is axes[0][-1])
        top.set(title=f"{attack}, eps {e:g}/255: every model", xlabel="clean accuracy (%)",
                ylabel="robust accuracy (%)")
        near = sub[sub.clean >= sub.clean.max() - zoom_points]
        pad_x = max(0.5, 0.08 * (near.clean.max() - near.clean.min()))
        pad_y = max(0.5, 0.08 * (near.robust.max() - near.robust.min()))
        bottom.set(xlim=(near.clean.min() - pad_x, near.clean.max() + pad_x),
                   ylim=(near.robust.min() - pad_y, near.robust.max() + pad_y),
                   title=f"zoom: clean within {zoom_points:g} points of the best", xlabel="clean accuracy (%)",
                   ylabel="robust accuracy (%)")
        order = near.sort_values("robust").reset_index(drop=True)
        for i, row in order.iterrows():  # labels in a column right of the panel, in robust order: none collide
            bottom.annotate(row.model, (row.clean, row.robust), xytext=(1.04, (i + 0.5) / len(order)),
                            textcoords="axes fraction", fontsize=7, va="center", ha="left",
                            arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.6})
    if axes[0][-1].get_legend() is not None:
        sns.move_legend(axes[0][-1], "upper left", bbox_to_anchor=(1.02, 1), fontsize="small", title=None)
    fig.suptitle("robust vs clean, mean over zero-shot datasets (up and right is better)", y=1.01)
    fig.tight_layout(w_pad=9.0)
    return fig


def plot_laat_arms(table, *, eps: float, attack_label: str) -> plt.Figure:
    """07: per LAAT arm, mean zero-shot accuracy (%) over the test tasks, clean and robust at eps (1/255): one dot per
    training seed and the mean over seeds as a bar; table from laat.seed_table."""
    arms = list(dict.fromkeys(table.arm))
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.8), sharey=False)
    for ax, (col, title) in zip(axes, (("clean", "clean"), ("robust", f"{attack_label}, eps {eps:g}/255"))):
        for i, arm in enumerate(arms):
            vals = 100 * table.loc[table.arm == arm, col]
            ax.bar(i, vals.mean(), color=f"C{i}", alpha=0.6)
            ax.scatter([i] * len(vals), vals, color="k", s=14, zorder=3)
        ax.set_xticks(range(len(arms)), arms, rotation=20, ha="right")
        ax.set(title=title, ylabel="accuracy (%), mean over zero-shot tasks" if col == "clean" else "")
    fig.suptitle("LAAT's 2x2: anchor expansion x CE relaxation (bars: mean over seeds; dots: seeds)", y=1.02)
    fig.tight_layout()
    return fig


def plot_dataset_bars(rows, *, attack: str, eps: float) -> plt.Figure:
    """05: robust accuracy (%) per dataset and model at one eps (1/255); the fine-tuning set is marked."""
    import seaborn as sns

    sub = rows[(rows.attack == attack) & (rows.eps == eps)].copy()
    sub["accuracy (%)"] = 100 * sub["accuracy"]
    sub["dataset"] = [d if z else f"{d} (fine-tuning set)" for d, z in zip(sub.dataset, sub.zero_shot)]
    fig, ax = plt.subplots(figsize=(max(7.0, 1.1 * sub.dataset.nunique() + 3), 4.2))
    sns.barplot(data=sub, x="dataset", y="accuracy (%)", hue="model_label", ax=ax)
    ax.set(title=f"{sub.attack_label.iloc[0]} at eps {eps:g}/255, per dataset", xlabel="")
    plt.setp(ax.get_xticklabels(), rotation=25, ha="right")
    sns.move_legend(ax, "upper left", bbox_to_anchor=(1.01, 1), fontsize="small", title=None)
    fig.tight_layout()
    return fig


def plot_search_frontier(ranked, *, floor: float, metric: str) -> plt.Figure:
    """06: every configuration tried, validation robust (metric) vs clean accuracy (%), one panel per method;
    the selected one circled, the clean floor of the selection rule dashed. ranked from study.rank_configs."""
    methods = list(dict.fromkeys(ranked.method))
    fig, axes = plt.subplots(1, len(methods), figsize=(2.6 * len(methods) + 1, 3.4), sharex=True, sharey=True,
                             squeeze=False)
    for ax, m in zip(axes[0], methods):
        sub = ranked[ranked.method == m]
        ax.scatter(100 * sub.clean, 100 * sub.score, s=28, c=["C0" if e else "C7" for e in sub.eligible])
        best = sub[sub["rank"] == 1]
        ax.scatter(100 * best.clean, 100 * best.score, s=160, facecolors="none", edgecolors="C3", linewidths=1.8)
        ax.axvline(100 * floor, ls="--", color="C3", lw=1)
        ax.set(title=m, xlabel="val clean (%)")
    axes[0][0].set_ylabel(f"val {metric} (%)")
    fig.suptitle("search on the validation tasks: every configuration (grey: below the clean floor; "
                 "circled: selected)", y=1.03, fontsize="medium")
    fig.tight_layout()
    return fig


def plot_seed_curves(summary) -> plt.Figure:
    """06: mean accuracy (%) over train seeds against eps (1/255; 0 clean) with 95% t-intervals, one line per
    method; summary from study.seed_summary restricted to the mean-over-tasks scores."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, (method, sub) in enumerate(summary.groupby("method", sort=False)):
        sub = sub.sort_values("eps")
        ax.errorbar(sub.eps + 0.06 * (i - 2.5), 100 * sub["mean"],
                    yerr=[100 * (sub["mean"] - sub.ci_low).fillna(0), 100 * (sub.ci_high - sub["mean"]).fillna(0)],
                    marker="o", ms=4, capsize=3, label=method)
    ax.set(xlabel="eps (1/255; 0 = clean)", ylabel="accuracy (%)",
           title="selected configurations, mean over zero-shot tasks and train seeds (95% t-intervals)")
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def plot_ablations(table, *, metric: str) -> plt.Figure:
    """06: mean accuracy (%) at one score per ablation variant with its 95% interval over seeds (horizontal bars);
    table: study.seed_summary rows of that metric."""
    sub = table[table.metric == metric].reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(6.8, 0.32 * len(sub) + 1.2))
    ax.barh(range(len(sub)), 100 * sub["mean"], color="C0", alpha=0.7,
            xerr=[100 * (sub["mean"] - sub.ci_low).fillna(0), 100 * (sub.ci_high - sub["mean"]).fillna(0)], capsize=3)
    ax.set_yticks(range(len(sub)), sub.method)
    ax.invert_yaxis()
    lo = 100 * min(sub.ci_low.min(skipna=True), sub["mean"].min())
    ax.set_xlim(max(0.0, lo - 5), None)
    ax.set(xlabel=f"{metric} accuracy (%), mean over tasks and seeds", title="TIMA's ablations (95% t-intervals)")
    fig.tight_layout()
    return fig


def plot_confirmatory(table, *, sesoi: float, labels: dict[str, str] | None = None) -> plt.Figure:
    """06's confirmatory experiment: TIMA minus each arm (points) with its interval at its Holm level, one panel per
    radius, the band of the smallest effect of interest shaded; table: confirm.comparisons (fractions); labels: a
    reader's name of each arm (confirm.arm_label), else the stored arm names."""
    labels = labels or {}
    radii = sorted(table.eps.unique(), reverse=True)
    fig, axes = plt.subplots(1, len(radii), figsize=(4.2 * len(radii) + (3.0 if labels else 0.0),
                                                     0.45 * table.arm.nunique() + 1.4), sharey=True, squeeze=False)
    for ax, eps in zip(axes[0], radii):
        sub = table[table.eps == eps].reset_index(drop=True)
        y = range(len(sub))
        ax.axvspan(-100 * sesoi, 100 * sesoi, color="0.9", zorder=0)
        ax.axvline(0, color="0.4", lw=0.8)
        ax.errorbar(100 * sub.estimate, y, xerr=[100 * (sub.estimate - sub.low), 100 * (sub.high - sub.estimate)],
                    fmt="o", color="C0", capsize=3)
        ax.set_yticks(list(y), [f"TIMA - {labels.get(a, a)}" for a in sub.arm])
        ax.set(title=f"{eps:g}/255 (Holm-level intervals)")
    axes[0][0].invert_yaxis()
    fig.supxlabel("difference in PGD-10 accuracy (points); shaded: +-smallest effect of interest", fontsize="medium")
    fig.tight_layout()
    return fig
