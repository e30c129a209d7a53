"""Run a tapelab experiment: `python run.py [KEY=VALUE ...]` (see `python run.py --help`)."""

from tapelab.cli import main

if __name__ == "__main__":
    main()
