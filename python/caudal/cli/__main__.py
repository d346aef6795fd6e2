"""``python -m caudal.cli``."""

import sys

from caudal.cli.main import main

sys.exit(main())
