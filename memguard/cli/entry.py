"""The `memguard` console script: the liveness probe's path imports nothing else.

`memguard probe` runs every few seconds in every pod; this module sends it to
memguard.probe (stdlib os/time only) before argparse, or anything of the
agent's, is imported. Every other command goes to memguard.cli.main.
"""

from __future__ import annotations

import sys


def main() -> int:
    arguments = sys.argv[1:]
    if arguments[:1] == ["probe"]:
        from memguard import probe

        return probe.main(arguments[1:])
    from memguard.cli import main as cli

    return cli.main(arguments)
