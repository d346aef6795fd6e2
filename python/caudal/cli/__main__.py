"""``python -m caudal.cli``."""

import sys

from caudal.cli.main import main

if __name__ == "__main__":  # not when a tool imports every submodule
    sys.exit(main())
