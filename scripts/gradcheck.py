"""Compare the tape's gradient with finite differences: `python scripts/gradcheck.py [KEY=VALUE ...]`."""

import sys

from tapelab.gradcheck import main

if __name__ == "__main__":
    sys.exit(main())
