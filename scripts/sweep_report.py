"""Rebuild sweep.csv, sweep.png and the HParams experiment of an existing sweep directory.

    python scripts/sweep_report.py outputs/multirun/2026-11-27/14-13-30

Use it for a sweep that ran on a cluster, was interrupted, or ran before the report existed. It reads
only the job directories, and replaces the report's files: sweep.csv and sweep.png at the sweep's root, and
the HParams experiment in its first job's directory (an older sweep's experiment at the root goes).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from tapelab.sweep import SWEEP_CSV, SWEEP_PNG, find_jobs, write_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="a sweep directory (the one holding multirun.yaml)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not args.sweep_dir.is_dir():
        print(f"error: sweep_dir: {args.sweep_dir} is not a directory", file=sys.stderr)
        return 2
    if not find_jobs(args.sweep_dir):
        print(
            f"error: sweep_dir: no job directories (with .hydra/overrides.yaml) below {args.sweep_dir}", file=sys.stderr
        )
        return 2
    table = write_report(args.sweep_dir)
    print(table.to_string(index=False, max_colwidth=40))
    print(f"wrote {args.sweep_dir / SWEEP_CSV} and {args.sweep_dir / SWEEP_PNG}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
