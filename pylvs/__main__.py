"""``python -m pylvs``: the same as the ``pylvs`` command."""

import sys

from pylvs.cli.main import main

sys.exit(main())
