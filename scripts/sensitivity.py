"""f, f′ and f″ of an objective: `python scripts/sensitivity.py [KEY=VALUE ...]` (see `--help`)."""

from tapelab.sensitivity import main

if __name__ == "__main__":
    main()
