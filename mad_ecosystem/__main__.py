"""``python -m mad_ecosystem``: the same command line as ``python ecosystem.py``."""

import sys

from mad_ecosystem.cli import main

sys.exit(main())
