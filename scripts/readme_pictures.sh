#!/usr/bin/env bash
# Re-make the pictures README.md shows, from real runs, into scripts/pictures/.
set -euo pipefail
cd "$(dirname "$0")/.."
sweep_dir="outputs/readme/sweep"
rm -rf "$sweep_dir"
python run.py -m objective=rosenbrock optimizer=sgd,adam,rmsprop lr=0.0001,0.0003,0.001,0.003,0.01 \
    epochs=3000 log.every=10 "hydra.sweep.dir=$sweep_dir"
cp "$sweep_dir/sweep.png" scripts/pictures/sweep.png
