"""`python -m memguard.cli`: the `memguard` command."""

import sys

from memguard.cli.main import main

sys.exit(main())
