"""packaging/build_image.py's pure parts: which apt source debootstrap uses, the
base image's name."""

from __future__ import annotations

import importlib.util
import pathlib
from types import ModuleType

BUILDER = pathlib.Path(__file__).resolve().parents[2] / "packaging" / "build_image.py"

# This host's apt sources (2026-11-30), as the files read.
DEBIAN_SOURCES = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
# http://snapshot.debian.org/archive/debian-security/20250520T000000Z
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""
CLOUD_SDK_LIST = "deb https://packages.cloud.google.com/apt cloud-sdk-bookworm main\n"
NODESOURCE_SOURCES = """\
Types: deb
URIs: https://deb.nodesource.com/node_20.x
Suites: nodistro
Components: main
Architectures: amd64
Signed-By: /usr/share/keyrings/nodesource.gpg
"""


def builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_image", BUILDER)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_mirror_is_the_source_serving_exactly_the_suite() -> None:
    apt_mirror = builder().apt_mirror
    sources = [
        ("/etc/apt/sources.list.d/cloud-sdk.list", CLOUD_SDK_LIST),
        ("/etc/apt/sources.list.d/debian.sources", DEBIAN_SOURCES),
        ("/etc/apt/sources.list.d/nodesource.sources", NODESOURCE_SOURCES),
    ]
    assert apt_mirror("bookworm", sources) == "http://deb.debian.org/debian"
    assert apt_mirror("bookworm-security", sources) == "http://deb.debian.org/debian-security"
    assert apt_mirror("trixie", sources) is None


def test_one_line_sources_with_options_comments_and_deb_src() -> None:
    apt_mirror = builder().apt_mirror
    text = (
        "# deb http://commented.example/debian bookworm main\n"
        "deb-src http://sources.example/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/usr/share/keyrings/x.gpg] http://mirror.example/debian"
        " bookworm main contrib\n"
    )
    assert apt_mirror("bookworm", [("/etc/apt/sources.list", text)]) == (
        "http://mirror.example/debian"
    )


def test_a_disabled_or_source_only_stanza_is_not_a_mirror() -> None:
    apt_mirror = builder().apt_mirror
    disabled = "Types: deb\nURIs: http://off.example/debian\nSuites: bookworm\nEnabled: no\n"
    source_only = "Types: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\n"
    sources = [("a.sources", disabled), ("b.sources", source_only)]
    assert apt_mirror("bookworm", sources) is None
    sources.append(
        ("c.sources", "Types: deb\nURIs: cdrom:[x]/ http://c.example/d\nSuites: bookworm\n")
    )
    assert apt_mirror("bookworm", sources) == "http://c.example/d"


def test_the_base_image_is_named_after_its_recipe() -> None:
    module = builder()
    tag = module.base_tag("bookworm")
    assert tag.startswith("localhost/memguard-base:bookworm-")
    assert tag == module.base_tag("bookworm")
    assert module.base_tag("trixie").split("-")[-1] != tag.split("-")[-1]
