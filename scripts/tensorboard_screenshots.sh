#!/usr/bin/env bash
# Re-make the TensorBoard screenshots README.md shows, from real runs, into scripts/pictures/:
# tensorboard_timeseries.png, tensorboard_hparams.png and tensorboard_graphs.png.
#
# Runs a small sweep into outputs/readme/tensorboard/sweep, serves it with TensorBoard on 127.0.0.1 and
# photographs three of its tabs with headless Chromium, which it installs with apt-get where it is missing
# (Debian; as root, or through sudo). About 40 s once Chromium is there; not part of CI. TensorBoard's own output
# goes to outputs/readme/tensorboard/tensorboard.log. SIZE=WxH sets the window (default 1280x800).
#
# The browser is driven through the Chrome DevTools protocol over a pipe (scripts/devtools.py, Python's
# standard library only) rather than with `chromium --screenshot`: each picture is taken once the tab shows
# its data (not after a fixed time), the Graphs tab needs the run chosen in its run menu (TensorBoard 2.21's
# `#graphs&run=NAME` no longer reaches that menu), and the Time Series tab's settings pane is closed first.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x .venv/bin/python ]; then PATH="$PWD/.venv/bin:$PATH"; fi  # tapelab's environment, where there is one
out="outputs/readme/tensorboard"
size="${SIZE:-1280x800}"

source scripts/chromium.sh  # sets $chromium, installing it where it is missing

# Nine jobs: SGD at lr 0.01 diverges. The job directories, TensorBoard's run names, are named after the two
# swept keys, e.g. `lr=0.001,optimizer=sgd_0`.
rm -rf "$out"
python run.py -m objective=rosenbrock optimizer=sgd,adam,rmsprop lr=0.001,0.003,0.01 epochs=1000 log.every=10 \
    "hydra.sweep.dir=$out/sweep"
runs=()
for dir in "$out"/sweep/*/; do
    if compgen -G "$dir/events.out.tfevents.*" >/dev/null; then runs+=("$(basename "$dir")"); fi
done
if [ ${#runs[@]} -eq 0 ]; then echo "no job directory with TensorBoard events in $out/sweep" >&2; exit 1; fi

port="$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
tensorboard --logdir "$out/sweep" --host 127.0.0.1 --port "$port" >"$out/tensorboard.log" 2>&1 &
tensorboard_pid=$!
trap 'kill "$tensorboard_pid" 2>/dev/null || true; wait "$tensorboard_pid" 2>/dev/null || true' EXIT

# Arguments: chromium, TensorBoard's URL and PID, the pictures' directory, the window size, the run whose
# graph to show (the first job directory), then every job's run name.
python - "$chromium" "http://127.0.0.1:$port" "$tensorboard_pid" scripts/pictures "$size" "${runs[0]}" "${runs[@]}" <<'PY'
import json, os, sys, time, urllib.request
from pathlib import Path

sys.path.insert(0, "scripts")
from devtools import Chromium, write_png

chromium, url, tensorboard_pid, pictures, size, graph_run, *runs = sys.argv[1:]
width, height = (int(n) for n in size.split("x"))


def get(path):
    with urllib.request.urlopen(url + path, timeout=10) as response:
        return json.load(response)


def wait_for(what, check, timeout=120.0, settle=0.0):
    """Poll check() until it returns the same truthy value for `settle` seconds; return that value."""
    end, last, since = time.monotonic() + timeout, None, 0.0
    while True:
        try:
            os.kill(int(tensorboard_pid), 0)
        except ProcessLookupError:
            sys.exit(f"tensorboard exited while waiting for {what}: see its log")
        try:
            value = check()
        except (OSError, ValueError):  # TensorBoard not answering yet
            value = None
        now = time.monotonic()
        if value != last:
            last, since = value, now
        if value and now - since >= settle:
            return value
        if now > end:
            sys.exit(f"timed out waiting for {what} (last: {last!r})")
        time.sleep(0.5)


DEEP_ALL = """var deepAll = (selector, root = document, found = []) => {
    found.push(...root.querySelectorAll(selector));
    for (const element of root.querySelectorAll("*"))
        if (element.shadowRoot) deepAll(selector, element.shadowRoot, found);
    return found;
};
"""


def photograph(name, page, what, check, settings=None, prepare=None):
    """Open `page` (?forceSVG=true: charts draw without a GPU) in a new browser, wait until the JS `check`
    returns the same non-zero number for 2 s, run the JS `prepare`, and save the screenshot `name`. `check` and
    `prepare` can call deepAll(selector), which finds elements inside shadow roots too."""
    with Chromium(chromium, width, height) as browser:
        browser.call("Page.addScriptToEvaluateOnNewDocument", source=DEEP_ALL)
        if settings:  # TensorBoard's saved settings, in place before its scripts read them
            browser.call("Page.addScriptToEvaluateOnNewDocument", source=(
                f"localStorage.setItem('_tb_global_settings', {json.dumps(json.dumps(settings))});"))
        browser.open(url + page)
        count = wait_for(what, lambda: browser.js(check), settle=2.0)
        if prepare:
            browser.js(prepare)
            time.sleep(1.5)
        print(f"{name}: {what}: {count}")
        path = Path(pictures) / name
        write_png(path, browser.screenshot())
        print(f"{path}: {path.stat().st_size // 1024} KB")


# TensorBoard answers and lists every job's run.
wait_for("tensorboard to list every run", lambda: set(runs) <= set(get("/data/runs")))

# Time Series as a user first sees it: the loss group and the lr group open, the others closed.
photograph(
    "tensorboard_timeseries.png", "/?forceSVG=true&smoothing=0#timeseries", "lines drawn in the charts",
    settings={"timeSeriesSettingsPaneOpened": False, "stepSelectorEnabled": False, "sideBarWidthInPercent": 22},
    check="""(() => {
        const charts = [...document.querySelectorAll("line-chart")].filter(
            chart => chart.getBoundingClientRect().top < window.innerHeight);  // the ones on the screen
        if (!charts.length) return 0;
        let lines = 0;
        for (const chart of charts) {
            const drawn = [...chart.querySelectorAll("path")].filter(p => (p.getAttribute("d") || "").length > 40);
            if (!drawn.length) return 0;
            lines += drawn.length;
        }
        return lines;
    })()""")

# HParams: the table view, once its rows are in.
photograph(
    "tensorboard_hparams.png", "/?forceSVG=true#hparams", "rows in the HParams table",
    check="""(() => { const grid = deepAll("vaadin-grid")[0];
                      return grid && grid.items ? grid.items.length : 0; })()""")

# Graphs: choose the run in the run menu once the default run's graph is drawn (or after 10 s), then wait
# for the chosen run's graph.
photograph(
    "tensorboard_graphs.png", "/?forceSVG=true#graphs", f"nodes drawn in the graph of {graph_run}",
    check=f"""(() => {{
        const controls = deepAll("tf-graph-controls")[0], board = deepAll("tf-graph-board")[0];
        if (!controls || !board || !controls.datasets) return 0;
        const index = controls.datasets.findIndex(dataset => dataset.name === {json.dumps(graph_run)});
        const drawn = board.renderHierarchy && board.progress && board.progress.value === 100;
        window.firstSeen = window.firstSeen || performance.now();
        if (index < 0) return 0;
        if (controls._selectedRunIndex !== index) {{
            if (!drawn && performance.now() - window.firstSeen < 10000) return 0;
            window.previousGraph = board.renderHierarchy;
            controls._selectedRunIndex = index;
            return 0;
        }}
        if (!drawn || board.renderHierarchy === window.previousGraph) return 0;
        return deepAll("g.node").length;
    }})()""",
    prepare="""deepAll("tf-graph-scene")[0].fit()""")
PY
