"""``python -m ocsdf.cli``: the ``ocsdf`` command."""

import sys

from . import main

sys.exit(main())
