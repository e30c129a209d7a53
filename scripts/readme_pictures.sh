#!/usr/bin/env bash
# Re-make the pictures README.md shows, from real runs, into scripts/pictures/.
set -euo pipefail
cd "$(dirname "$0")/.."
out="outputs/readme"
rm -rf "$out"
python run.py -m objective=rosenbrock optimizer=sgd,adam,rmsprop lr=0.0001,0.0003,0.001,0.003,0.01 \
    epochs=3000 log.every=10 "hydra.sweep.dir=$out/sweep"
cp "$out/sweep/sweep.png" scripts/pictures/sweep.png
python run.py objective=himmelblau optimizer=adam lr=0.05 epochs=500 "hydra.run.dir=$out/himmelblau"
cp "$out/himmelblau/trajectory.png" scripts/pictures/trajectory.png
