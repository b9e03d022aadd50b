"""mad-ecosystem: one command starts the bus, every MAD and the gateway.

    python ecosystem.py                 # run everything on 127.0.0.1:8765
    python ecosystem.py run --port 9000 # another port
    python ecosystem.py --help          # every subcommand

The command line itself lives in :mod:`mad_ecosystem.cli` (also ``python -m mad_ecosystem``
and the ``mad-ecosystem`` console script of an installed wheel).
"""

import sys

from mad_ecosystem.cli import main

if __name__ == "__main__":
    sys.exit(main())
