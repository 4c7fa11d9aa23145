"""``python -m bench.failover``: see the package docstring."""

from __future__ import annotations

import sys

from bench.failover.cli import main

if __name__ == "__main__":
    sys.exit(main())
