"""Build `memguard-probe`: `memguard probe` as one file for application images.

    python3 packaging/build_probe_zipapp.py [--output build/memguard-probe]
                                            [--python "/usr/bin/env python3"]

The archive holds only what the probe needs: an empty memguard/__init__.py,
memguard/probe/__init__.py (standard library only: checked here, the build fails
otherwise) and a __main__.py. It runs on any python3 >= 3.8:

    memguard-probe probe --warning 85 --failure 95          # the #! line
    python3 -I -S memguard-probe probe --warning 85 ...     # fastest: no site-packages

("probe" may be left out.) Entries are stored uncompressed with fixed
timestamps, so a build gives the same bytes every time for one interpreter. Each
module also gets a .pyc checked against its source by hash (PEP 552): the
interpreter that matches the builder's version skips compiling; any other falls
back to the source (zipimport skips a .pyc with another magic number).
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import marshal
import os
import pathlib
import sys
import zipfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
PROBE_SOURCE = ROOT / "memguard" / "probe" / "__init__.py"
DEFAULT_OUTPUT = ROOT / "build" / "memguard-probe"
DEFAULT_INTERPRETER = "/usr/bin/env python3"
# What memguard/probe/__init__.py may import: cheap at startup and in every python3.
ALLOWED_IMPORTS = frozenset({"__future__", "os", "sys", "time"})
FIXED_DATE_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest a zip can say
PYC_FLAGS_CHECKED_HASH = 0b11  # PEP 552: hash-based, checked against the source

MAIN_SOURCE = b"""\
import sys

from memguard.probe import main

args = sys.argv[1:]
sys.exit(main(args[1:] if args[:1] == ["probe"] else args))
"""


def imported_modules(source: bytes) -> set[str]:
    """Top-level names of every module the source imports, anywhere in it."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add("." if node.level else (node.module or "").split(".")[0])
    return names


def checked_pyc(source: bytes, archive_name: str) -> bytes:
    code = compile(source, archive_name, "exec", dont_inherit=True)
    return (
        importlib.util.MAGIC_NUMBER
        + PYC_FLAGS_CHECKED_HASH.to_bytes(4, "little")
        + importlib.util.source_hash(source)
        + marshal.dumps(code)
    )


def archive_members(probe_source: bytes) -> list[tuple[str, bytes]]:
    """(name in the zip, content) of every member, in order."""
    forbidden = imported_modules(probe_source) - ALLOWED_IMPORTS
    if forbidden:
        raise SystemExit(
            f"memguard/probe/__init__.py imports {sorted(forbidden)}: "
            f"only {sorted(ALLOWED_IMPORTS)}"
        )
    members: list[tuple[str, bytes]] = []
    for name, source in (
        ("__main__.py", MAIN_SOURCE),
        ("memguard/__init__.py", b""),
        ("memguard/probe/__init__.py", probe_source),
    ):
        members.append((name, source))
        members.append((name + "c", checked_pyc(source, name)))
    return members


def build(output: pathlib.Path, interpreter: str, probe_source: bytes) -> None:
    """Write the executable archive to output (atomically: a temp file renamed)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    with partial.open("wb") as file:
        file.write(b"#!" + interpreter.encode() + b"\n")
        with zipfile.ZipFile(file, "w", zipfile.ZIP_STORED) as archive:
            for name, content in archive_members(probe_source):
                info = zipfile.ZipInfo(name, date_time=FIXED_DATE_TIME)
                info.external_attr = 0o644 << 16
                archive.writestr(info, content)
    partial.chmod(0o755)
    os.replace(partial, output)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", type=pathlib.Path, default=DEFAULT_OUTPUT)
    parser.add_argument(
        "--python",
        default=DEFAULT_INTERPRETER,
        help=f"the #! interpreter (default {DEFAULT_INTERPRETER!r}; e.g. '/usr/bin/python3 -IS')",
    )
    args = parser.parse_args(argv)
    build(args.output, args.python, PROBE_SOURCE.read_bytes())
    print(f"{args.output}: {args.output.stat().st_size} bytes, #!{args.python}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
