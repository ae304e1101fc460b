"""Figures (matplotlib, Agg backend, PNG): the paper's Figures 4-5 redrawn against measured time.

- `latency_vs_macs`: measured batch-1 latency against MACs, one series per runtime (and thread count), with the FP32
  physical limit line; MACs alone do not predict latency, this shows by how much.
- `accuracy_vs_latency`: expected top-1 against latency, the Pareto front per runtime, and the target-FPS line
  (models left of it are real-time) -- Figure 4 of the paper with milliseconds instead of mult-adds. Rows whose
  top-1 came from different sources (a published table, the user's runs on one task) are drawn in separate panels.

- `plot_training_curves`: loss (train and val) and val top-1 / top-5 against epoch, from metrics.jsonl rows.

Each function is self-contained (takes rows, writes one PNG atomically, returns its path).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plain_log_ticks(ax, *axes: str) -> None:
    """Log-axis tick labels as plain numbers ('134', '0.2'), where matplotlib writes '1.34x10^2': over a narrow range
    (two models of 133 and 150M MACs) it labels every minor tick so, and the labels ran into each other. Which ticks
    get a label stays matplotlib's choice. Call after the axis is made logarithmic (that resets its formatters)."""
    from matplotlib.ticker import LogFormatterSciNotation

    class Plain(LogFormatterSciNotation):
        def __call__(self, x, pos=None):
            return f"{x:g}" if super().__call__(x, pos) else ""

    for name in axes:
        axis = getattr(ax, f"{name}axis")
        axis.set_major_formatter(Plain())
        axis.set_minor_formatter(Plain(labelOnlyBase=False))


def _series(rows: Sequence[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in rows:
        if r.get("latency_ms_median") and not str(r["model"]).startswith("timm:"):
            out.setdefault(f"{r['runtime']} x{r['threads']}", []).append(r)
    return out


def _machines(rows: Sequence[dict]) -> str:
    """What the rows ran on: the GPU of a cuda row, the CPU of another (an H200 run was titled with its host's CPU)."""
    names = (r.get("gpu") if r.get("device") == "cuda" else r.get("cpu") for r in rows)
    return " and ".join(dict.fromkeys(str(n) for n in names if n))


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """(latency, accuracy) points no other point beats on both (lower latency, higher accuracy), by latency."""
    front, best = [], float("-inf")
    for lat, top1 in sorted(points, key=lambda p: (p[0], -p[1])):
        if top1 > best:
            front.append((lat, top1))
            best = top1
    return front


def _style(name: str, names: list[str]) -> dict:
    """One colour per runtime, solid for 1 thread and dashed for more (so 2-thread swings read as such)."""
    runtimes = sorted({n.split(" x")[0] for n in names})
    color = f"C{runtimes.index(name.split(' x')[0]) % 10}"
    return {"color": color, "ls": "-" if name.endswith(" x1") else "--"}


def latency_vs_macs(rows: Sequence[dict], path: str | os.PathLike) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    series = _series(rows)
    for name, rs in sorted(series.items()):
        rs = sorted(rs, key=lambda r: r["macs_M"])
        x, y = [r["macs_M"] for r in rs], [r["latency_ms_median"] for r in rs]
        ax.plot(x, y, marker="o", ms=4, label=name, **_style(name, list(series)))
    limit = sorted((r["macs_M"], r["fp32_limit_ms"]) for r in rows if r.get("fp32_limit_ms") and r["threads"] == 1)
    if limit:
        ax.plot(*zip(*limit, strict=True), "k--", lw=1, label="FP32 limit, 1 thread")
    ax.set(xscale="log", yscale="log", xlabel="MACs (M, paper convention)", ylabel="batch-1 latency, median (ms)")
    _plain_log_ticks(ax, "x", "y")
    ax.set_title(f"Latency vs MACs on {_machines(rows)}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


# How each accuracy source reads on an axis. A results file merged over several bench runs can hold rows of different
# sources (`bench.write_results` keeps an earlier run's rows): the published ImageNet tables, or `bench --accuracy`'s
# fit of the user's runs (maybe of 10 classes). Their top-1s are not of one task, so they never share a y axis.
IMAGENET_TOP1 = "expected ImageNet top-1 (%)"
TOP1_LABELS = {
    "tfslim": (IMAGENET_TOP1, "TF-slim's published table"),
    "paper": (IMAGENET_TOP1, "the paper's Tables 6-7"),
    "measured": ("top-1 (%): your runs", ""),  # says its source already (`top1_ylabel` adds how it estimated)
    None: ("top-1 (%), source not recorded", ""),
}
TABLES = ("tfslim", "paper", "measured")


def top1_table(row: dict) -> str | None:
    """The accuracy source a row's top-1 came from: ``top1_table`` (`bench.measure`), else, in rows written before
    that column, ``top1_source`` where it names a table (a grid point's own value), else None (not recorded)."""
    if row.get("top1_table"):
        return row["top1_table"]
    return row.get("top1_source") if row.get("top1_source") in TABLES else None


def top1_ylabel(table: str | None, named: bool, task: str | None = None, estimated: bool = True) -> str:
    """The accuracy axis' label for ``table``; ``named`` adds the source where the label alone would not tell it from
    another panel's (two ImageNet tables); ``task`` (`accuracy.task_name`) names what the user's runs measured;
    ``estimated``, whether the panel holds a top-1 the accuracy model estimated from the runs (`ESTIMATED`): only then
    does the user's runs' label say "interpolated between them" (a panel of run folders' rows, each its run's own
    measurement, said so too)."""
    base, source = TOP1_LABELS.get(table, (f"top-1 (%): {table}", ""))
    if task:
        base = base.replace("your runs", f"your runs ({task})")
    if table == "measured" and estimated:
        base += ", interpolated between them"
    return f"{base}:\n{source}" if named and source else base


def _top1_groups(rows: Sequence[dict]) -> dict[tuple[str | None, str | None], list[dict]]:
    """The plotted rows (`_series`) with a top-1 by (`top1_table`, ``top1_task``): published tables first, then the
    user's runs (one group per task they measured), then unrecorded."""
    groups: dict[tuple[str | None, str | None], list[dict]] = {}
    for r in (r for rs in _series(rows).values() for r in rs):
        if r.get("top1") is not None:
            groups.setdefault((top1_table(r), r.get("top1_task")), []).append(r)
    order = {t: i for i, t in enumerate(TABLES)}

    def rank(key):
        (table, task), _ = key
        return table is None, order.get(table, len(order)), table or "", task or ""

    return dict(sorted(groups.items(), key=rank))


def accuracy_vs_latency(rows: Sequence[dict], path: str | os.PathLike, *, target_fps: float = 24.0) -> Path:
    """One panel per accuracy source (`top1_table`; the user's runs, one per task they measured: `top1_task`),
    stacked on one latency axis: top-1s of different sources are not comparable (10-class runs against ImageNet
    tables, or two 10-class sets), so they get neither one y axis nor one Pareto front (refusing would lose the plot
    of a finished bench; separate files would hide that the other exists). One source draws one panel, labelled as
    before (naming the runs' task where the rows record it)."""
    plt = _pyplot()
    groups = _top1_groups(rows)
    if not groups:  # no top-1 at all: the empty axis of the source the rows name
        groups = {("measured" if any(r.get("top1_table") == "measured" for r in rows) else "tfslim", None): []}
    named = len(groups) > 1
    fig, axes = plt.subplots(len(groups), 1, figsize=(7, 5 if not named else 1 + 3.5 * len(groups)), sharex=True,
                             squeeze=False)  # fmt: skip
    names = list(_series(rows))  # colours over every panel: a runtime keeps its colour
    for ax, ((table, task), group) in zip(axes[:, 0], groups.items(), strict=True):
        _accuracy_panel(ax, _series(group), names, target_fps)
        guessed = any(map(_estimated, group))
        ax.set(xscale="log", ylabel=top1_ylabel(table, named, task, guessed))
        _plain_log_ticks(ax, "x")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    axes[-1, 0].set_xlabel("batch-1 latency, median (ms)")
    title = "Accuracy vs measured latency (paper Fig. 4 against time)"
    axes[0, 0].set_title(title + ("\none panel per top-1 source: not comparable across panels" if named else ""))
    return _save(fig, path)


ESTIMATED = ("interpolated", "extrapolated")  # `accuracy.AccuracyModel.predict`'s sources of a top-1 it estimated


def _estimated(row: dict) -> bool:
    """Whether a row's top-1 is one the accuracy model estimated (`ESTIMATED`), not a table's or a run's figure."""
    from .bench import top1_basis  # imported where used, as the plots did before

    return top1_basis(row.get("top1_source")) in ESTIMATED


def _accuracy_panel(ax, series: dict[str, list[dict]], names: list[str], target_fps: float) -> None:
    """Each runtime's points and Pareto front, and the target-FPS line. A top-1 the accuracy model estimated (a
    model off its table's grid) is a hollow point, one of the table or a run a filled one; the legend of a runtime
    that does not run fp32 (INT8, bf16, fp16: `bench.of_fp32_weights`, the rule of the rows' ``top1_source``) says
    its top-1s are the fp32 weights'."""
    from .bench import of_fp32_weights

    estimated = False
    for name, rs in sorted(series.items()):
        style = _style(name, names)
        for guessed in (False, True):
            pts = [(r["latency_ms_median"], r["top1"]) for r in rs
                   if _estimated(r) == guessed]  # fmt: skip
            if pts:
                ax.plot(*zip(*pts, strict=True), "o", ms=4, alpha=0.5, color=style["color"],
                        markerfacecolor="none" if guessed else style["color"])  # fmt: skip
            estimated |= guessed and bool(pts)
        pts = [(r["latency_ms_median"], r["top1"]) for r in rs]
        weights = "; fp32 weights' top-1" if any(of_fp32_weights(r.get("dtype")) for r in rs) else ""
        ax.plot(*zip(*pareto_front(pts), strict=True), label=f"{name} (Pareto front{weights})", **style)
    if estimated:
        ax.plot([], [], "o", ms=4, color="grey", markerfacecolor="none", label="top-1 estimated (off the table)")
    ax.axvline(1000.0 / target_fps, color="red", ls=":", label=f"{target_fps:g} FPS")


def _save(fig, path: str | os.PathLike, dpi: int = 110) -> Path:
    from .atomic import atomic_open

    p = Path(path)
    fig.tight_layout()
    with atomic_open(p, "wb") as f:
        fig.savefig(f, format="png", dpi=dpi)
    _pyplot().close(fig)
    return p


def bench_plots(rows: Sequence[dict], folder: str | os.PathLike, *, target_fps: float = 24.0, stem: str = "") -> list:
    """Both bench figures into ``folder``; file names carry the hardware and runtimes (``stem``, from the rows)."""
    from .bench import results_name

    stem = stem or results_name(rows)
    folder = Path(folder)
    return [
        latency_vs_macs(rows, folder / f"{stem}-latency-vs-macs.png"),
        accuracy_vs_latency(rows, folder / f"{stem}-accuracy-vs-latency.png", target_fps=target_fps),
    ]


def plot_training_curves(rows: list[dict], path: str | os.PathLike, *, title: str = "") -> Path:
    """Two panels: loss vs epoch (train, val), accuracy vs epoch (train top-1, val top-1, val top-5). PNG. Val points
    only at the epochs that were evaluated (``--eval-every``)."""
    plt = _pyplot()
    epochs = [r["epoch"] for r in rows]
    evaluated = [r for r in rows if r.get("val_top1") is not None]
    val_epochs = [r["epoch"] for r in evaluated]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    # the training loss is what the run minimised (label smoothing, MixUp/CutMix targets, a teacher's term and
    # weight), the val loss plain cross-entropy: one axis, not one quantity
    ax_loss.plot(epochs, [r["train_loss"] for r in rows], "o-", label="train (the run's objective)")
    ax_loss.plot(val_epochs, [r["val_loss"] for r in evaluated], "s-", label="val (cross-entropy)")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.plot(epochs, [100 * r["train_top1"] for r in rows], "o-", label="train top-1")
    ax_acc.plot(val_epochs, [100 * r["val_top1"] for r in evaluated], "s-", label="val top-1")
    if any(r.get("val_top5") is not None for r in evaluated):  # None for 5 classes or fewer
        ax_acc.plot(val_epochs, [100 * r["val_top5"] for r in evaluated], "^--", label="val top-5")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    return _save(fig, path, dpi=100)
