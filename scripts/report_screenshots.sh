#!/usr/bin/env bash
# Re-make the pictures of a study's report that README.md shows, into scripts/pictures/: study_report.png (the top
# of the quick study's report.html) and study_ecdf.png (its ECDF figure).
#
# Runs `python run.py study=quick` into outputs/readme/study (about 15 s), builds its report.html from the tables
# (`tapelab.load_study(dir).report()`), opens it in headless Chromium with the network off, driven over the DevTools
# protocol (scripts/devtools.py), and photographs it; it stops without a picture if the page logs an error or asks
# for a URL. Chromium is installed with apt-get where it is missing (Debian; as root, or through sudo). Not part of
# CI. SIZE=WxH sets the window (default 1280x800).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x .venv/bin/python ]; then PATH="$PWD/.venv/bin:$PATH"; fi  # tapelab's environment, where there is one
out="outputs/readme/study"
size="${SIZE:-1280x800}"

source scripts/chromium.sh  # sets $chromium, installing it where it is missing

rm -rf "$out"
python run.py study=quick "hydra.run.dir=$out"
report="$(python -c 'import sys, tapelab; print(tapelab.load_study(sys.argv[1]).report())' "$out")"

python - "$chromium" "$report" scripts/pictures "$size" <<'PY'
import sys
from pathlib import Path

sys.path.insert(0, "scripts")
from devtools import Chromium, write_png

chromium, report, pictures, size = sys.argv[1:]
width, height = (int(n) for n in size.split("x"))
with Chromium(chromium, width, height, offline=True) as browser:
    browser.open(Path(report).resolve().as_uri())
    if browser.errors or browser.requests:
        sys.exit(f"{report} logged errors {browser.errors} and asked for {browser.requests}: no pictures taken")
    for name, selector in [("study_report.png", None), ("study_ecdf.png", "#fig-ecdf")]:
        path = Path(pictures) / name
        write_png(path, browser.screenshot(selector))
        print(f"{path}: {path.stat().st_size // 1024} KB")
PY
