"""``python -m serket_pyro``: the ``serket-pyro`` command."""

import sys

from .app.cli import main

if __name__ == "__main__":
    sys.exit(main())
