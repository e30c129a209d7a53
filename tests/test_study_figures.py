"""A study's figures (`tapelab.study.figures`), read back from their pixels and their SVG: small synthetic tables
whose values land at known places on the axes, found from the frames and tick marks the PNG shows (`pixels`)."""

from __future__ import annotations

import re
import subprocess
import sys
import xml.etree.ElementTree as ElementTree

import numpy as np
import pandas as pd
import pytest
from matplotlib.artist import Artist

from pixels import DPI, Frame, frames, ink_groups, is_colour, near, rgb, shows, solid
from tapelab.study.figures import (
    convergence_figure,
    ecdf_figure,
    inline_svg,
    profile_figure,
    save,
    sensitivity_figure,
    styles,
)

# Paul Tol's "muted" scheme as he publishes it (tol_colors.py: rose indigo sand green cyan wine teal olive purple),
# and the black his module adds to it.
TOL_MUTED = {"#CC6677", "#332288", "#DDCC77", "#117733", "#88CCEE", "#882255", "#44AA99", "#999933", "#AA4499"}
BLACK = "#000000"
TWELVE = ["sgd", "momentum", "nesterov", "adam", "adamw", "adamax", "nadam", "rmsprop", "adagrad", "adadelta", "ftrl",
          "lion"]  # fmt: skip
REFERENCE = "adam at Keras's default lr"
SVG_NAMESPACE = "http://www.w3.org/2000/svg"
WORD_SPACE = 10  # pixels: the blank rows between the words of a vertical label, at most
STRIP = 0.25  # of a sensitivity panel's height: the top strip of × marks (where a tuning seed diverged)


def colour(style) -> tuple[float, float, float]:
    """A style's colour as RGB in [0, 1]."""
    return tuple(int(style.colour[i : i + 2], 16) / 255 for i in (1, 3, 5))


def panels(image: np.ndarray) -> list[Frame]:
    """The frames of the axes, left to right, at the inner edges of their spines: at PNG_DPI a spine is 2 pixels wide,
    and `frames` finds a frame for each pair of its pixel rows and columns."""
    inner: list[Frame] = []
    for frame in frames(image):
        same = [found for found in inner if abs(found.left - frame.left) <= 2 and abs(found.top - frame.top) <= 2]
        if same:
            inner.remove(same[0])
            frame = Frame(max(frame.left, same[0].left), min(frame.right, same[0].right),
                          max(frame.top, same[0].top), min(frame.bottom, same[0].bottom))  # fmt: skip
        inner.append(frame)
    return inner


def png(figure, tmp_path, name="figure") -> np.ndarray:
    """The figure's PNG as `save` writes it, as pixels."""
    return rgb(save(figure, tmp_path, name)["png"])


def at_text_size(figure, tmp_path) -> np.ndarray:
    """The figure drawn at the pixels helper's DPI, at which its text is compared with matplotlib's."""
    path = tmp_path / "text.png"
    figure.savefig(path, dpi=DPI)
    return rgb(path)


def y_label(image: np.ndarray, frame: Frame) -> np.ndarray:
    """The figure's y label: the leftmost ink left of `frame` beside it, and as far up and down as it runs without a
    blank row (a label longer than the frame reaches above and below it; the legend is further down)."""
    start, stop = ink_groups(image[frame.top : frame.bottom, : frame.left])[0]
    inked = (image[:, start:stop] < 0.999).any(axis=(1, 2))
    top = bottom = (frame.top + frame.bottom) // 2
    while inked[max(0, top - WORD_SPACE) : top].any():
        top -= 1
    while inked[bottom : bottom + WORD_SPACE].any():
        bottom += 1
    return image[top:bottom, start:stop]


def log_position(value: float, low: tuple[float, float], high: tuple[float, float]) -> float:
    """Where `value` lies on a log axis, from the positions of two of its ticks, (value, position) each."""
    fraction = (np.log10(value) - np.log10(low[0])) / (np.log10(high[0]) - np.log10(low[0]))
    return low[1] + fraction * (high[1] - low[1])


def filled_middle(image: np.ndarray, rgb_colour, frame, size: int = 7) -> tuple[float, float] | None:
    """The mean (row, column) of the `size` × `size` squares of `rgb_colour` inside `frame`: a filled marker's middle
    (a line is thinner than `size` pixels)."""
    inside = image[frame.top + 1 : frame.bottom, frame.left + 1 : frame.right]
    rows, columns = np.nonzero(solid(inside, size) & is_colour(inside, rgb_colour, 0.02))
    return (frame.top + 1 + rows.mean(), frame.left + 1 + columns.mean()) if len(rows) else None


# styles


def test_twelve_optimizers_get_twelve_distinct_colour_and_line_style_pairs_from_tols_muted_scheme():
    found = styles(TWELVE, REFERENCE)
    assert list(found) == [*TWELVE, REFERENCE]  # the legends' order: as given, the reference row last
    pairs = {(style.colour, style.linestyle) for style in found.values()}
    assert len(pairs) == 13
    assert {found[name].colour for name in TWELVE} == TOL_MUTED  # all nine colours, and only those
    assert len({found[name].colour for name in TWELVE[:9]}) == 9  # line styles only once the colours run out
    assert found[REFERENCE].colour == BLACK and BLACK not in {found[name].colour for name in TWELVE}
    assert len({found[name].marker for name in TWELVE}) == 12  # apart in grey print too


def test_an_optimizers_style_depends_on_its_place_only_and_the_reference_row_takes_no_place():
    first = styles(["a", "b", "c"])
    assert styles(["x", "y", "c"])["c"] == first["c"]
    with_reference = styles(["a", REFERENCE, "b", "c"], reference_row=REFERENCE)
    assert with_reference == {**first, REFERENCE: with_reference[REFERENCE]}


def test_an_optimizer_named_twice_is_refused():
    with pytest.raises(ValueError, match="more than once: adam"):
        styles(["adam", "sgd", "adam"])


# ECDF


def ecdf_bands(group: str, shares: dict[int, float], optimizer: str = "sgd") -> pd.DataFrame:
    """An ECDF over steps 0…1000 that steps up to shares[s] at step s, with a band ±0.1 around it."""
    steps = np.arange(0, 1001)
    share = np.zeros(len(steps))
    for step, value in shares.items():
        share[steps >= step] = value
    return pd.DataFrame({"optimizer": optimizer, "problem_group": group, "step": steps, "share": share,
                         "low": np.clip(share - 0.1, 0, 1), "high": np.clip(share + 0.1, 0, 1)})  # fmt: skip


def test_ecdf_draws_the_share_against_steps_on_a_log_axis_from_step_0_with_its_band(tmp_path):
    bands = pd.concat([ecdf_bands("2-D", {10: 0.5, 100: 1.0}), ecdf_bands("all problems (2-D)", {1: 0.25})])
    found = styles(["sgd"])
    image = png(ecdf_figure(bands, found), tmp_path)
    overall, group = panels(image)  # the panel over all problems first
    curve = colour(found["sgd"])
    x_ticks, y_ticks = group.x_ticks(image), group.y_ticks(image)
    assert len(x_ticks) == 5 and abs(x_ticks[0] - group.left) <= 1  # steps 0 (the left edge), 1, 10, 100, 1000
    assert len(y_ticks) == 5  # shares 1, 0.75, 0.5, 0.25, 0, top to bottom
    zero, one = y_ticks[-1], y_ticks[0]

    def row(share):
        return zero + share * (one - zero)

    def column(step):
        return log_position(step, (10, x_ticks[2]), (100, x_ticks[3]))

    assert near(image, curve, row(0.0), column(3)) and not near(image, curve, row(0.5), column(3))
    assert near(image, curve, row(0.5), column(30)) and not near(image, curve, row(0.0), column(30))
    assert near(image, curve, row(1.0), column(300))
    band = image[round(row(0.57)), round(column(30))]  # inside the band, off the line: shaded in the curve's hue
    assert band.min() < 0.97 and band[0] > band[1]  # rose: more red than green
    assert image[round(row(0.65)), round(column(30))].min() > 0.99  # outside the band: white
    overall_ticks = overall.x_ticks(image)
    overall_column = log_position(30, (10, overall_ticks[2]), (100, overall_ticks[3]))
    assert near(image, curve, row(0.25), overall_column) and not near(image, curve, row(0.5), overall_column)


def test_ecdf_axes_say_what_they_count_in_which_units(tmp_path):
    figure = ecdf_figure(ecdf_bands("all problems", {1: 0.5}), styles(["sgd"]))
    image = at_text_size(figure, tmp_path)
    (frame,) = panels(image)
    _, tick_labels = frame.y_labels(image)
    assert shows(y_label(image, frame), "share of (problem, target, seed) solved", "large", rotation=90)
    assert all(shows(tick, text) for tick, text in zip(tick_labels, ["1", "0.75", "0.5", "0.25", "0"], strict=True))
    svg = inline_svg(figure)
    assert "<!-- steps (updates) -->" in svg and "<!-- Runtime ECDFs at the chosen learning rates -->" in svg


# profile


def test_profile_is_a_step_function_of_tau_from_1_to_4(tmp_path):
    taus = np.round(np.arange(1.0, 3.501, 0.01), 2)  # the axis goes on to τ = 4
    rho = np.where(taus >= 3, 1.0, np.where(taus >= 2, 0.5, 0.0))
    found = styles(["sgd", "adam"])
    profile = pd.DataFrame({"optimizer": "adam", "tau": taus, "rho": rho})
    image = png(profile_figure(profile, found), tmp_path)
    (frame,) = panels(image)
    curve = colour(found["adam"])
    zero, one = frame.y_ticks(image)[-1], frame.y_ticks(image)[0]

    def at(tau, share):
        return zero + share * (one - zero), frame.left + (tau - 1) / 3 * (frame.right - frame.left)

    assert near(image, curve, *at(1.5, 0.0)) and near(image, curve, *at(2.5, 0.5)) and near(image, curve, *at(3.4, 1))
    assert not near(image, curve, *at(2.5, 0.0)) and not near(image, curve, *at(1.5, 0.5))
    assert near(image, curve, *at(2, 0.25)) and near(image, curve, *at(3, 0.75))  # the steps up, at τ = 2 and 3
    assert not near(image, curve, *at(2.15, 0.25), radius=3) and not near(image, curve, *at(3.15, 0.75), radius=3)
    assert not near(image, curve, *at(3.8, 1.0))  # no data past τ = 3.5


# convergence


def gap_table(steps: np.ndarray, gap: np.ndarray) -> pd.DataFrame:
    """One optimizer's median gap on one problem, with no band (low = high = the median)."""
    return pd.DataFrame({"problem": "sphere", "optimizer": "sgd", "step": steps, "median_gap": gap, "low": gap,
                         "high": gap})  # fmt: skip


def test_convergence_draws_a_gap_of_zero_on_a_floor_a_decade_below_the_smallest_gap(tmp_path):
    steps = np.arange(0, 101)
    gap = np.where(steps <= 6, 10.0 ** -np.minimum(steps, 6), 0.0)  # tenfold a step, to 10⁻⁶ at step 6, then 0
    found = styles(["sgd"])
    figure = convergence_figure(gap_table(steps, gap), found)
    image = png(figure, tmp_path)
    (frame,) = panels(image)
    curve = colour(found["sgd"])
    floor, *decades = frame.y_ticks(image)[::-1]  # bottom to top: the floor, then 10⁻⁵, 10⁻³, 10⁻¹
    spacing = np.diff([floor, *decades])
    assert len(decades) == 3 and np.ptp(spacing) <= 1  # evenly spaced: the floor is 10⁻⁷, two decades below 10⁻⁵

    def row(gap):
        return decades[0] + (np.log10(gap) + 5) / 2 * (decades[1] - decades[0])

    x_ticks = frame.x_ticks(image)  # steps 0, 1, 10, 100

    def column(step):
        return log_position(step, (1, x_ticks[1]), (10, x_ticks[2]))

    assert near(image, curve, row(1e-3), column(3))
    assert near(image, curve, floor, column(50)) and near(image, curve, floor, column(99))
    assert near(image, curve, row(1.0), frame.left + 2)  # step 0, at the left edge
    assert near(image, (0.6, 0.6, 0.6), floor, column(3), radius=6)  # the floor's hatched band, left of the curve
    text = at_text_size(figure, tmp_path)
    (text_frame,) = panels(text)
    _, tick_labels = text_frame.y_labels(text)
    assert [shows(tick, expected) for tick, expected in zip(tick_labels, ["10⁻¹", "10⁻³", "10⁻⁵", "gap 0"],
                                                            strict=True)] == [True] * 4  # fmt: skip
    assert shows(y_label(text, text_frame), "median gap f − f* (best so far)", "large", rotation=90)


def test_a_panel_without_a_gap_of_zero_has_no_floor():
    steps = np.arange(0, 11)
    gap = 10.0 ** -steps.astype(float)
    floors = ["<!-- gap 0 -->", "<!-- gap exactly 0 -->"]  # the tick label and the legend's entry, as SVG names them
    reaching_zero = inline_svg(convergence_figure(gap_table(steps, np.where(steps < 10, gap, 0.0)), styles(["sgd"])))
    assert all(floor in reaching_zero for floor in floors)
    svg = inline_svg(convergence_figure(gap_table(steps, gap), styles(["sgd"])))
    assert not any(floor in svg for floor in floors)


# sensitivity

LRS = 10.0 ** (-4 + 0.5 * np.arange(9))  # 1e-4, 3e-4, …, 1
MEDIAN = np.array([-1, -2, -3, -4, -np.inf, -3, np.nan, np.nan, np.nan])  # log10 of the final gap


def sensitivity_table() -> pd.DataFrame:
    return pd.DataFrame({"problem": "booth", "optimizer": "sgd", "lr": LRS, "median": MEDIAN, "low": MEDIAN - 0.5,
                         "high": MEDIAN + 0.5, "diverged": LRS > 0.02, "chosen": LRS == LRS[4]})  # fmt: skip


def test_sensitivity_stars_the_chosen_rate_on_the_zero_floor_and_marks_diverged_rates_on_top(tmp_path):
    found = styles(["adam", "sgd"])
    image = png(sensitivity_figure(sensitivity_table(), found), tmp_path)
    (frame,) = panels(image)
    curve = colour(found["sgd"])
    ticks = frame.y_ticks(image)[::-1]  # bottom to top: the floor, then 10⁻⁵ … 10⁰, a decade apart
    assert len(ticks) == 7 and np.ptp(np.diff(ticks)) <= 1  # the floor: 10⁻⁶, a decade below 10^−4.5's decade

    def row(log10_gap):
        return ticks[1] + (log10_gap + 5) * (ticks[2] - ticks[1])

    x_ticks = frame.x_ticks(image)  # 10⁻⁴ … 10⁰

    def column(lr):
        return log_position(lr, (1e-4, x_ticks[0]), (1.0, x_ticks[-1]))

    assert len(x_ticks) == 5
    for lr, log10_gap in zip(LRS[:4], MEDIAN[:4], strict=True):
        assert near(image, curve, row(log10_gap), column(lr))
    star = filled_middle(image, curve, frame)
    assert star is not None and np.hypot(star[0] - ticks[0], star[1] - column(LRS[4])) <= 3  # on the floor
    strip_row = frame.top + STRIP / 2 * (frame.bottom - frame.top)  # the only optimizer's row of × marks
    for lr in LRS:
        assert near(image, curve, strip_row, column(lr), radius=4) == (lr > 0.02)
    below_strip = image[round(frame.top + STRIP * (frame.bottom - frame.top)) + 2 : frame.bottom, round(column(LRS[7]))]
    assert not is_colour(below_strip, curve, 0.15).any()  # a NaN median (all seeds diverged) is left out


def test_sensitivity_labels_its_floor_gap_0(tmp_path):
    image = at_text_size(sensitivity_figure(sensitivity_table(), styles(["sgd"])), tmp_path)
    (frame,) = panels(image)
    _, tick_labels = frame.y_labels(image)
    assert shows(tick_labels[-1], "gap 0") and shows(tick_labels[-2], "10⁻⁵")
    assert shows(y_label(image, frame), "gap f − f* at the budget", "large", rotation=90)


# files and inline SVG


def test_save_writes_an_svg_for_the_page_and_a_png_a_full_hd_slide_wide(tmp_path):
    groups = ["all problems (2-D, 10-D, 50-D)", "2-D", "10-D", "50-D"]  # four panels: the figure's full width
    bands = pd.concat([ecdf_bands(group, {1: 0.5}) for group in groups])
    paths = save(ecdf_figure(bands, styles(["sgd"])), tmp_path / "figures", "ecdf")
    assert paths == {"svg": tmp_path / "figures" / "ecdf.svg", "png": tmp_path / "figures" / "ecdf.png"}
    assert rgb(paths["png"]).shape[1] == 1920
    root = ElementTree.parse(paths["svg"]).getroot()
    assert root.get("viewBox").split()[2] == "720"  # 10 inches of 72 points: 960 CSS pixels


class FailsAsPng(Artist):
    """An artist that draws as SVG and fails as PNG (on Agg)."""

    def draw(self, renderer) -> None:
        if type(renderer).__name__ == "RendererAgg":
            raise RuntimeError("no PNG")


def test_a_figure_that_fails_to_draw_as_png_leaves_both_files_already_there(tmp_path):
    (tmp_path / "ecdf.svg").write_text("old svg")
    (tmp_path / "ecdf.png").write_bytes(b"old png")
    figure = ecdf_figure(ecdf_bands("all problems", {1: 0.5}), styles(["sgd"]))
    figure.add_artist(FailsAsPng())
    with pytest.raises(RuntimeError, match="no PNG"):
        save(figure, tmp_path, "ecdf")
    assert (tmp_path / "ecdf.svg").read_text() == "old svg" and (tmp_path / "ecdf.png").read_bytes() == b"old png"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["ecdf.png", "ecdf.svg"]


def test_two_inline_svgs_share_a_page_without_an_id_clash_or_an_external_reference():
    first = inline_svg(ecdf_figure(ecdf_bands("all problems", {1: 0.5}), styles(["sgd"])))
    steps = np.arange(0, 11)
    gap = np.where(steps < 5, 10.0 ** -steps.astype(float), 0.0)
    second = inline_svg(convergence_figure(gap_table(steps, gap), styles(["sgd"])))
    for svg, title in [(first, "Runtime ECDFs at the chosen learning rates"),
                       (second, "Convergence at the chosen learning rates")]:  # fmt: skip
        assert svg.startswith("<svg") and "<?xml" not in svg and "DOCTYPE" not in svg
        root = ElementTree.fromstring(svg)
        assert root[0].tag == f"{{{SVG_NAMESPACE}}}title" and root[0].text == title
    page = ElementTree.fromstring(f"<body>{first}{second}</body>")
    ids = [element.get("id") for element in page.iter() if element.get("id")]
    assert len(ids) == len(set(ids)) > 100
    references = [found for pair in re.findall(r'href="#([^"]+)"|url\(#([^)]+)\)', first + second) for found in pair
                  if found]  # fmt: skip
    assert references and set(references) <= set(ids)
    assert set(re.findall(r"https?://[^\"' )]*", first + second)) == {SVG_NAMESPACE}
    assert "@font-face" not in first + second  # text as paths: no font to fetch


def test_inline_svg_is_the_same_text_for_the_same_figure():
    def build():
        return inline_svg(ecdf_figure(ecdf_bands("all problems", {1: 0.5}), styles(["sgd"])))

    assert build() == build()


# bad tables


def test_a_table_without_a_needed_column_or_without_rows_is_refused():
    table = ecdf_bands("all problems", {1: 0.5})
    with pytest.raises(ValueError, match="ecdf_figure: the table lacks columns low"):
        ecdf_figure(table.drop(columns=["low"]), styles(["sgd"]))
    with pytest.raises(ValueError, match="ecdf_figure: the table has no row to draw"):
        ecdf_figure(table.iloc[:0], styles(["sgd"]))


def test_an_optimizer_without_a_style_is_refused_by_name():
    with pytest.raises(ValueError, match="no style for optimizer lion"):
        ecdf_figure(ecdf_bands("all problems", {1: 0.5}, optimizer="lion"), styles(["sgd"]))


@pytest.mark.e2e
def test_figures_leave_matplotlibs_global_state_as_it_was(tmp_path):
    code = f"""
import sys
import matplotlib
from tapelab.study import figures
def settings():  # reading rcParams["backend"] would choose a backend: pyplot's work
    return {{key: matplotlib.rcParams[key] for key in matplotlib.rcParams if key != "backend"}}
before = settings()
bands = {{"optimizer": ["sgd"] * 2, "problem_group": ["all problems"] * 2, "step": [0, 1], "share": [0.0, 1.0],
          "low": [0.0, 0.5], "high": [0.0, 1.0]}}
import pandas as pd
figure = figures.ecdf_figure(pd.DataFrame(bands), figures.styles(["sgd"]))
figures.save(figure, {str(tmp_path)!r}, "ecdf")
figures.inline_svg(figure)
assert "matplotlib.pyplot" not in sys.modules, "pyplot imported"
assert settings() == before, "rcParams changed"
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
