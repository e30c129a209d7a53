"""Where a run's history goes: metrics.csv, TensorBoard event files and summary.json."""
