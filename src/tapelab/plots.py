"""Pictures, drawn with matplotlib's Agg backend (no display needed)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tapelab.atomic import replacing

MAX_LEGEND_ENTRIES = 12


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def numeric_swept_keys(table: pd.DataFrame, keys: list[str]) -> list[str]:
    """The swept keys whose values are numbers and differ between jobs."""
    return [
        key
        for key in keys
        if pd.api.types.is_numeric_dtype(table[key]) and not pd.api.types.is_bool_dtype(table[key])
        and table[key].nunique() > 1
    ]


def loss_scale(losses: pd.Series) -> str:
    """Log scale when no loss is negative (exact zeros are left out), linear otherwise."""
    return "log" if len(losses) and (losses >= 0).all() else "linear"


def plot_sweep(table: pd.DataFrame, curves: dict[int, pd.DataFrame], keys: list[str], path: Path) -> None:
    """Loss curves of all jobs on one log axis, and the final loss against each numeric swept key.

    `curves` maps a job number to its (step, loss) history. Diverged jobs are drawn dashed in the
    curves, outside the y range of the others, and left out of the final-loss panels.
    """
    plt = _pyplot()
    varying = [key for key in keys if table[key].nunique() > 1]
    numeric = numeric_swept_keys(table, varying)
    figure, axes = plt.subplots(1, 1 + len(numeric), figsize=(7 + 4.5 * len(numeric), 4.8), squeeze=False)
    finished = table[table["status"].isin(["completed", "converged"])]
    labels = {row.job: ", ".join(f"{key}={getattr(row, key)}" for key in varying) or f"job {row.job}"
              for row in table[["job", *varying]].itertuples()}
    status = dict(zip(table["job"], table["status"]))

    curve_axis = axes[0][0]
    for job, history in curves.items():
        style = "--" if status.get(job) == "diverged" else "-"
        curve_axis.plot(history["step"], history["loss"], style, label=labels[job], linewidth=1.2)
    kept = [history["loss"] for job, history in curves.items() if status.get(job) != "diverged"]
    all_losses = pd.concat(kept) if kept else pd.Series(dtype=float)
    if loss_scale(all_losses) == "log":
        curve_axis.set_yscale("log", nonpositive="mask")
        all_losses = all_losses[all_losses > 0]
        if len(all_losses):
            curve_axis.set_ylim(all_losses.min() / 2, all_losses.max() * 2)
    elif len(all_losses):
        margin = 0.05 * (all_losses.max() - all_losses.min()) or 1.0
        curve_axis.set_ylim(all_losses.min() - margin, all_losses.max() + margin)
    curve_axis.set(xlabel="step", ylabel="loss", title=f"loss of {len(curves)} runs")
    if 0 < len(curves) <= MAX_LEGEND_ENTRIES:
        curve_axis.legend(fontsize="x-small")
    curve_axis.grid(True, which="major", alpha=0.3)

    for axis, key in zip(axes[0][1:], numeric):
        group_keys = [other for other in varying if other != key]
        groups = finished.groupby(group_keys, dropna=False) if group_keys else [((), finished)]
        for label, group in groups:
            ordered = group.sort_values(key)
            axis.plot(ordered[key], ordered["final_loss"], marker="o", label=", ".join(map(str, label)) or None)
        values = table[key].dropna()
        if (values > 0).all() and values.max() / values.min() >= 100:
            axis.set_xscale("log")
        if loss_scale(finished["final_loss"]) == "log":
            axis.set_yscale("log", nonpositive="mask")
        left_out = len(table) - len(finished)
        note = f" ({left_out} diverged or failed, not shown)" if left_out else ""
        axis.set(xlabel=key, ylabel="final loss", title=f"final loss against {key}{note}")
        if group_keys and len(groups) <= MAX_LEGEND_ENTRIES:
            axis.legend(fontsize="x-small", title=", ".join(group_keys), title_fontsize="x-small")
        axis.grid(True, which="major", alpha=0.3)
    figure.tight_layout()
    with replacing(path) as temporary:
        figure.savefig(temporary, dpi=110, format="png")
    plt.close(figure)
