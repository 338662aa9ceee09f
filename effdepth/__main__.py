"""``python -m effdepth`` = the ``effdepth`` command."""

import sys

from effdepth.cli import main

if __name__ == "__main__":
    sys.exit(main())
