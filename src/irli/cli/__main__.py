"""`python -m irli.cli`: the `irli` command."""

import sys

from .main import main

sys.exit(main())
