"""sweep.png: the loss curves of a sweep's jobs, and their final loss against each numeric swept key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tapelab.plots import log_ticks, loss_axis, loss_shift, new_figure, save, step_axis

MAX_LEGEND_ENTRIES = 12
COLOUR_MAPS = ["Blues", "Oranges", "Greens", "Reds", "Purples", "Greys", "YlOrBr", "PuRd"]  # a sweep's groups
ENDED = ("completed", "converged", "diverged")  # the jobs that have a final loss
DASHES = ["-", "--", ":", "-."]  # a sweep's grey lines of final losses, told apart


def numeric_swept_keys(table: pd.DataFrame, keys: list[str]) -> list[str]:
    """The swept keys whose values are numbers and differ between jobs."""
    return [
        key
        for key in keys
        if pd.api.types.is_numeric_dtype(table[key])
        and not pd.api.types.is_bool_dtype(table[key])
        and table[key].nunique() > 1
    ]


def job_swatch(row: pd.Series, color: Any) -> Any:
    """A job's legend swatch, a short line in its curve's colour; a diverged job's is marked ✖."""
    from matplotlib.lines import Line2D

    marker = "X" if row["status"] == "diverged" else "None"
    return Line2D([], [], color=color, linewidth=3, marker=marker, markeredgecolor="black", markersize=6)


def job_label(row: pd.Series, keys: list[str], steps: bool = True) -> str:
    """A job's values of `keys` (or its number), and with `steps` the step it diverged at, if it did."""
    label = ", ".join(f"{key}={row[key]}" for key in keys) or f"job {row['job']}"
    return f"{label}, diverged at step {row['steps']}" if steps and row["status"] == "diverged" else label


def curve_styles(
    table: pd.DataFrame, varying: list[str], numeric: list[str]
) -> tuple[dict[int, Any], list[Any], list[str]]:
    """A colour per job, and the legend's handles and labels, drawn in exactly those colours.

    With a non-numeric swept key (e.g. the optimizer), each of its values gets a colour map and an entry
    whose handle shows its jobs' shades side by side: the numeric keys (e.g. lr) go from light to dark.
    Otherwise each job has its own colour and entry. A legend past MAX_LEGEND_ENTRIES entries is left out.
    """
    from matplotlib import colormaps
    from matplotlib.lines import Line2D

    groups_by = [key for key in varying if key not in numeric]
    if not groups_by or not numeric:
        colors = {job: f"C{i % 10}" for i, job in enumerate(table["job"])}
        handles = [job_swatch(row, colors[row["job"]]) for _, row in table.iterrows()]
        labels = [job_label(row, varying) for _, row in table.iterrows()]
        return (colors, handles, labels) if len(handles) <= MAX_LEGEND_ENTRIES else (colors, [], [])
    colors, handles, labels = {}, [], []
    for index, (values, group) in enumerate(table.groupby(groups_by, sort=True)):
        cmap = colormaps[COLOUR_MAPS[index % len(COLOUR_MAPS)]]
        ordered = group.sort_values(numeric)
        shades = [0.4 + 0.55 * i / max(1, len(ordered) - 1) for i in range(len(ordered))]
        colors.update({job: cmap(shade) for job, shade in zip(ordered["job"], shades, strict=True)})
        handles.append(tuple(job_swatch(row, colors[row["job"]]) for _, row in ordered.iterrows()))
        label = ", ".join(f"{key}={value}" for key, value in zip(groups_by, values, strict=True))
        diverged = [
            job_label(row, numeric, steps=False) for _, row in ordered.iterrows() if row["status"] == "diverged"
        ]
        labels.append(f"{label} (✖ diverged: {'; '.join(diverged)})" if diverged else label)
    spans = ", then ".join(f"{key} {table[key].min()} → {table[key].max()}" for key in numeric)
    handles.append(Line2D([], [], color="none"))
    labels.append(f"light → dark: {spans}")
    return (colors, handles, labels) if len(handles) <= MAX_LEGEND_ENTRIES else (colors, [], [])


def mark_on_top_edge(axis: Any, x: Any, color: Any, gid: str | None = None) -> None:
    """A ✖ on the top edge of `axis` at each of `x` (data units): a diverged job, whose loss is off the scale."""
    if len(x):  # an empty unclipped line would still count, at the figure's corner, in the layout
        axis.plot(x, np.ones(len(x)), "X", color=color, markeredgecolor="black", markersize=10, linestyle="none",
                  clip_on=False, zorder=3, transform=axis.get_xaxis_transform(), gid=gid)  # fmt: skip


def plot_sweep(table: pd.DataFrame, curves: dict[int, pd.DataFrame], keys: list[str], path: Path) -> None:
    """Write sweep.png (see `sweep_figure`)."""
    save(sweep_figure(table, curves, keys), path)


def sweep_figure(table: pd.DataFrame, curves: dict[int, pd.DataFrame], keys: list[str]) -> Any:
    """Loss curves of all jobs on one log axis, and the final loss against each numeric swept key.

    `curves` maps a job number to its (step, loss) history. Diverged jobs are marked ✖ on the top edge
    of each panel: at the step they diverged, and above their value of the key.
    """
    from matplotlib.legend_handler import HandlerTuple

    varying = [key for key in keys if table[key].nunique() > 1]
    numeric = numeric_swept_keys(table, varying)
    colors, handles, labels = curve_styles(table, varying, numeric)
    figure, axes = new_figure(7 + 4.5 * len(numeric), 4.8, columns=1 + len(numeric))
    draw_curves(axes[0], table, curves, colors)
    if handles:
        shades = max(len(handle) if isinstance(handle, tuple) else 1 for handle in handles)
        axes[0].legend(handles, labels, handler_map={tuple: HandlerTuple(ndivide=None, pad=0)}, fontsize="x-small",
                       handlelength=max(2.0, 0.9 * shades))  # fmt: skip
    shaded = any(key not in numeric for key in varying)  # each job a shade of its group's colour map
    for axis, key in zip(axes[1:], numeric, strict=True):
        draw_final_loss(axis, table, key, [other for other in varying if other != key], colors, shaded)
    figure.tight_layout()
    return figure


def draw_curves(axis, table: pd.DataFrame, curves: dict[int, pd.DataFrame], colors: dict[int, Any]) -> None:
    """The loss of every job against the step, in `colors`.

    The y limits follow the jobs that did not diverge: a diverged job's curve runs on out of them.
    """
    status = dict(zip(table["job"], table["status"], strict=True))
    diverged = [job for job in curves if status.get(job) == "diverged"]
    followed = [history["loss"] for job, history in curves.items() if job not in diverged]
    losses = pd.concat(followed or [history["loss"] for history in curves.values()]) if curves else pd.Series()
    shift = loss_shift(losses)
    for job, history in curves.items():
        axis.plot(history["step"], history["loss"] - shift, "-", color=colors.get(job), linewidth=1.2,
                  gid=f"job {job}")  # fmt: skip
    loss_axis(axis, losses - shift, shift)
    for job in diverged:
        mark_on_top_edge(axis, [curves[job]["step"].iat[-1]], colors.get(job))
    step_axis(axis)
    note = f", {len(diverged)} diverged (✖ on the top edge)" if diverged else ""
    axis.set_title(f"loss of {len(curves)} runs{note}")
    axis.grid(True, which="major", alpha=0.3)


def draw_final_loss(
    axis, table: pd.DataFrame, key: str, group_keys: list[str], colors: dict[int, Any], shaded: bool
) -> None:
    """The final loss against `key`, a line per combination of the other swept keys.

    Each job is a point in its curve's colour (`colors`), or if it diverged a ✖ on the top edge above its
    value of `key`; failed and unfinished jobs are left out. When the jobs are `shaded` (those of a line are
    shades of one colour map), a line has the colour of its darkest job; otherwise its jobs' colours have
    nothing in common, and it is grey, told apart from the others by its dashes.
    """
    ended = table[table["status"].isin(ENDED)]
    finals = ended.loc[ended["status"] != "diverged", "final_loss"]
    shift = loss_shift(finals)
    groups = ended.groupby(group_keys, dropna=False) if group_keys else [((), ended)]
    for index, (label, group) in enumerate(groups):
        ordered = group.sort_values(key)
        finished = ordered[ordered["status"] != "diverged"]
        if shaded:
            style = {"color": colors.get(ordered["job"].iat[-1])}
        else:
            style = {"color": "grey", "linestyle": DASHES[index % len(DASHES)]}
        axis.plot(finished[key], finished["final_loss"] - shift, label=", ".join(map(str, label)) or None, **style)
        for _, job in finished.iterrows():
            job_colour = colors.get(job["job"])
            axis.plot(job[key], job["final_loss"] - shift, "o", color=job_colour, gid=f"job {int(job['job'])}")
    for _, job in ended[ended["status"] == "diverged"].iterrows():
        mark_on_top_edge(axis, [job[key]], colors.get(job["job"]), gid=f"job {int(job['job'])}")
    values = ended[key].dropna()
    if len(values) and (values > 0).all() and values.max() / values.min() > 10:  # more than a decade
        axis.set_xscale("log")
        log_ticks(axis.xaxis, values.min(), values.max())
    loss_axis(axis, finals - shift, shift, "final loss")
    notes = ["✖ on the top edge: diverged"] if (ended["status"] == "diverged").any() else []
    if len(table) > len(ended):
        notes.append(f"{len(table) - len(ended)} failed or unfinished, not shown")
    axis.set(xlabel=key, title=f"final loss against {key}" + (f"\n({'; '.join(notes)})" if notes else ""))
    if group_keys and len(groups) <= MAX_LEGEND_ENTRIES:
        axis.legend(fontsize="x-small", title=", ".join(group_keys), title_fontsize="x-small")
    axis.grid(True, which="major", alpha=0.3)
