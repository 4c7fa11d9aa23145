"""``python -m bench.forward``: see the package docstring."""

from __future__ import annotations

import sys

from bench.forward.cli import main

if __name__ == "__main__":
    sys.exit(main())
