"""`python -m memguard.probe`: the liveness probe alone."""

import sys

from memguard.probe import main

sys.exit(main(sys.argv[1:]))
