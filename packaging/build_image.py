"""Build memguard's image on this machine, with no registry in reach: `make image`.

    python packaging/build_image.py [--tag ghcr.io/memguard/memguard:0.1.0]
                                    [--suite bookworm] [--mirror URI] [--rebuild-base]

Root, podman, runc and debootstrap (Debian's packages: `make image-deps`).
1. The base image, made once and kept in podman's storage (a second build
   reuses it): `debootstrap --variant=minbase --include=python3,python3-venv`
   of the host's Debian release from the mirror in the host's apt sources,
   trimmed (apt lists and caches, docs, man pages, locales) and imported with
   `podman import` as localhost/memguard-base:<suite>-<recipe hash>.
2. The wheels, on the host with this interpreter: memguard's (its cffi module
   compiled here, so this Python's X.Y must be the base's: checked) and its
   dependencies'; and the memguard-probe zipapp. Into a fresh build context.
3. `podman build -f deploy/Dockerfile --build-arg BASE_IMAGE=<base>` of that
   context: the Dockerfile of a registry build, which takes the wheels from the
   context and installs them with no index (and here no network).
   The image this tag named before, if nothing else names it now, is removed.

podman runs here only with the runc runtime and explicit ulimits (crun refuses
this host's hybrid cgroup layout; raising RLIMIT_NOFILE is refused): PODMAN.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterable, Iterator, Sequence

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
PODMAN = ["podman", "--runtime", "runc"]
ULIMITS = ["--ulimit", "nofile=20000:20000", "--ulimit", "nproc=4000:4000"]
DEFAULT_REPOSITORY = "ghcr.io/memguard/memguard"
BASE_REPOSITORY = "localhost/memguard-base"
BASE_PACKAGES = ("python3", "python3-venv")
# Removed from the rootfs before import (145 MB): nothing in the image reads them;
# apt's directories stay (an image built on it runs apt-get update first).
TRIMMED = (
    "var/cache/apt/*.bin",
    "var/cache/apt/archives/*.deb",
    "var/lib/apt/lists/*_*",
    "usr/share/doc/*",
    "usr/share/man/*",
    "usr/share/info/*",
    "usr/share/locale/*",
)
PYTHON_LABEL = "org.memguard.python"
APT_SOURCES = [pathlib.Path("/etc/apt/sources.list"), pathlib.Path("/etc/apt/sources.list.d")]


def log(message: str) -> None:
    print(f"build_image: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def step(what: str) -> Iterator[None]:
    started = time.monotonic()
    log(f"{what} ...")
    yield
    log(f"{what}: {time.monotonic() - started:.1f} s")


# -- apt sources: the host's Debian mirror -------------------------------------------


def _deb822_entries(text: str) -> Iterator[tuple[list[str], list[str], list[str]]]:
    """(types, uris, suites) of each enabled stanza of a .sources file."""
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        key = ""
        for line in stanza.splitlines():
            if not line.strip() or line.startswith("#"):
                continue
            if line[0].isspace() and key:  # a continuation line
                fields[key] += " " + line.strip()
                continue
            key, _, value = line.partition(":")
            key = key.strip().lower()
            fields[key] = value.strip()
        if fields.get("enabled", "yes").lower() != "no":
            yield (
                fields.get("types", "").split(),
                fields.get("uris", "").split(),
                fields.get("suites", "").split(),
            )


def _one_line_entries(text: str) -> Iterator[tuple[list[str], list[str], list[str]]]:
    """(types, uris, suites) of each `deb [options] uri suite components` line."""
    for raw in text.splitlines():
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) > 1 and words[1].startswith("["):  # [arch=amd64 signed-by=...]
            end = next((i for i, w in enumerate(words) if w.endswith("]")), len(words) - 1)
            words = words[:1] + words[end + 1 :]
        if len(words) >= 3:
            yield [words[0]], [words[1]], [words[2]]


def apt_mirror(suite: str, sources: Iterable[tuple[str, str]]) -> str | None:
    """The first `deb` URI serving exactly `suite` (not bookworm-security, not
    another vendor's cloud-sdk-bookworm) in (file name, text) pairs of apt sources."""
    for name, text in sources:
        parse = _deb822_entries if name.endswith(".sources") else _one_line_entries
        for types, uris, suites in parse(text):
            if "deb" in types and suite in suites:
                for uri in uris:
                    if uri.startswith(("http://", "https://", "file:/")):
                        return uri
    return None


def host_apt_sources() -> list[tuple[str, str]]:
    files: list[pathlib.Path] = []
    for path in APT_SOURCES:
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix in (".list", ".sources"))
        elif path.is_file():
            files.append(path)
    return [(str(path), path.read_text(errors="replace")) for path in files]


def host_suite() -> str:
    """The host's Debian release (its glibc is the one the cffi module links against)."""
    for line in pathlib.Path("/etc/os-release").read_text().splitlines():
        key, _, value = line.partition("=")
        if key == "VERSION_CODENAME" and value.strip('"'):
            return value.strip('"')
    raise SystemExit("build_image: /etc/os-release names no VERSION_CODENAME: pass --suite")


# -- podman --------------------------------------------------------------------------


def podman(*args: str, capture: bool = True) -> str:
    command = [*PODMAN, *args]
    result = subprocess.run(command, capture_output=capture, text=True, check=False)
    if result.returncode != 0:
        detail = (result.stderr or "").strip()[-2000:] if capture else ""
        raise SystemExit(f"build_image: {' '.join(command)} failed ({result.returncode}) {detail}")
    return result.stdout if capture else ""


def image_id(name: str) -> str | None:
    result = subprocess.run(
        [*PODMAN, "image", "inspect", "--format", "{{.Id}}", name],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip() if result.returncode == 0 else None


def image_label(name: str, label: str) -> str:
    return podman("image", "inspect", "--format", f'{{{{index .Config.Labels "{label}"}}}}', name)


# -- the base image ------------------------------------------------------------------


def base_tag(suite: str) -> str:
    """The base's name: a new recipe (suite, packages, trimming) is a new image."""
    recipe = repr((suite, BASE_PACKAGES, TRIMMED)).encode()
    return f"{BASE_REPOSITORY}:{suite}-{hashlib.sha256(recipe).hexdigest()[:10]}"


def _mounts_under(directory: pathlib.Path) -> list[str]:
    with open("/proc/self/mountinfo") as file:
        points = [line.split()[4] for line in file]
    prefix = str(directory) + "/"
    return sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True)


def _remove_rootfs(directory: pathlib.Path) -> None:
    """rmtree, after unmounting what a failed debootstrap may have left mounted in it
    (its /proc and /sys): never delete through a mount."""
    for point in _mounts_under(directory):
        subprocess.run(["umount", "--lazy", point], check=False)
    left = _mounts_under(directory)
    if left:
        raise SystemExit(f"build_image: still mounted, not removing {directory}: {left}")
    shutil.rmtree(directory)


def make_base(tag: str, suite: str, mirror: str) -> None:
    rootfs_parent = pathlib.Path(tempfile.mkdtemp(prefix="memguard-rootfs-", dir="/var/tmp"))
    rootfs = rootfs_parent / "rootfs"
    try:
        with step(f"debootstrap {suite} from {mirror}"):
            subprocess.run(
                ["debootstrap", "--variant=minbase", "--include=" + ",".join(BASE_PACKAGES),
                 suite, str(rootfs), mirror],
                check=True, stdout=subprocess.DEVNULL,
            )  # fmt: skip
        for pattern in TRIMMED:
            for entry in rootfs.glob(pattern):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        python = os.readlink(rootfs / "usr" / "bin" / "python3").removeprefix("python")
        with step(f"podman import {tag} (python {python})"):
            tar = ["tar", "-C", str(rootfs), "-c", "."]
            archive = subprocess.Popen(tar, stdout=subprocess.PIPE)
            assert archive.stdout is not None
            imported = subprocess.run(
                [*PODMAN, "import", "--change", f"LABEL {PYTHON_LABEL}={python}",
                 "--change", 'CMD ["python3"]', "-", tag],
                stdin=archive.stdout, capture_output=True, text=True, check=False,
            )  # fmt: skip
            archive.stdout.close()
            if archive.wait() != 0 or imported.returncode != 0:
                raise SystemExit(f"build_image: importing the rootfs failed: {imported.stderr}")
    finally:
        if rootfs.exists():
            _remove_rootfs(rootfs)
        rootfs_parent.rmdir()


# -- wheels and the image ------------------------------------------------------------


def build_wheels(context: pathlib.Path) -> None:
    """build/image/{wheels/,memguard-probe} in the context: deploy/Dockerfile's
    wheels stage takes them as they are instead of compiling."""
    image_dir = context / "build" / "image"
    with step("wheels (memguard and its dependencies) and memguard-probe"):
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
             "--wheel-dir", str(image_dir / "wheels"), str(ROOT)],
            check=True,
        )  # fmt: skip
        subprocess.run(
            [sys.executable, str(ROOT / "packaging" / "build_probe_zipapp.py"),
             "--output", str(image_dir / "memguard-probe")],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip


def build_image(tag: str, base: str, version: str) -> None:
    previous = image_id(tag)
    with tempfile.TemporaryDirectory(prefix="memguard-image-context-") as context:
        build_wheels(pathlib.Path(context))
        with step(f"podman build {tag}"):
            podman(
                "build", "--quiet", "--layers=false", "--force-rm", "--network=none", *ULIMITS,
                "--file", str(DOCKERFILE),
                "--build-arg", f"BASE_IMAGE={base}",
                "--label", f"org.opencontainers.image.version={version}",
                "--tag", tag, context,
            )  # fmt: skip
    if previous is not None and previous != image_id(tag):
        names = podman("image", "inspect", "--format", "{{.RepoTags}}", previous).strip()
        if names == "[]":  # untagged now: this build replaced it
            subprocess.run([*PODMAN, "rmi", previous], capture_output=True, check=False)


def project_version() -> str:
    with (ROOT / "pyproject.toml").open("rb") as file:
        return str(tomllib.load(file)["project"]["version"])


def missing_tools(names: Sequence[str]) -> list[str]:
    return [name for name in names if shutil.which(name) is None]


def main(argv: list[str] | None = None) -> int:
    version = project_version()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tag", default=f"{DEFAULT_REPOSITORY}:{version}")
    parser.add_argument("--suite", default=None, help="Debian release (default: the host's)")
    parser.add_argument("--mirror", default=None, help="default: the host's apt sources'")
    parser.add_argument("--rebuild-base", action="store_true", help="debootstrap it anew")
    args = parser.parse_args(argv)
    started = time.monotonic()
    missing = missing_tools(["podman", "runc"])
    if missing:
        raise SystemExit(f"build_image: {missing} not found: `make image-deps` installs them")
    suite = args.suite or host_suite()
    base = base_tag(suite)
    if args.rebuild_base or image_id(base) is None:
        if os.geteuid() != 0 or missing_tools(["debootstrap"]):
            raise SystemExit("build_image: making the base image needs root and debootstrap")
        mirror = args.mirror or apt_mirror(suite, host_apt_sources())
        if mirror is None:
            raise SystemExit(f"build_image: no apt source serves {suite}: pass --mirror")
        make_base(base, suite, mirror)
    else:
        log(f"base image {base}: cached")
    python = image_label(base, PYTHON_LABEL).strip()
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    if python != here:
        raise SystemExit(
            f"build_image: the base has Python {python!r}, this interpreter is {here}: "
            "memguard's cffi module is compiled here for the image; run this with a "
            f"python{python} (or pass --suite for a release with Python {here})"
        )
    build_image(args.tag, base, version)
    size_mb = int(podman("image", "inspect", "--format", "{{.Size}}", args.tag)) / 1e6
    log(f"{args.tag}: {size_mb:.0f} MB, built in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
