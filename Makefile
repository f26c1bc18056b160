# Two entry points do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck pytest bench clean vm-deps probe-zipapp image image-deps

$(STAMP): pyproject.toml setup.py native/build_native.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/memguard demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

# The cgroup v2 real-kernel tier boots a VM (virtme-ng, QEMU TCG, Debian's kernel):
# its host tools come from Debian's packages, installed as root when missing; so
# does tmux, the real terminal of the `memguard status` test.
vm-deps:
	@if ! command -v qemu-system-x86_64 >/dev/null || ! command -v busybox >/dev/null \
	    || ! ls /boot/vmlinuz-* >/dev/null 2>&1 || ! test -x /usr/bin/tmux; then \
	  echo "installing the test tools: qemu-system-x86 linux-image-amd64 busybox-static tmux"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends qemu-system-x86 linux-image-amd64 busybox-static tmux >/dev/null; \
	fi

# The image (`make image`, tests/image): podman with runc (crun refuses this host's
# hybrid cgroup layout) and debootstrap for its base, installed as root when missing.
image-deps:
	@if ! command -v podman >/dev/null || ! command -v runc >/dev/null \
	    || ! command -v debootstrap >/dev/null; then \
	  echo "installing the image's build tools: podman runc debootstrap"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends podman runc debootstrap >/dev/null; \
	fi

# memguard's image with no registry: a debootstrap base (made once, cached), wheels
# built here, deploy/Dockerfile (README "Image"). IMAGE=registry/name:tag to name it.
IMAGE ?=
image: $(STAMP) image-deps
	$(BIN)/python packaging/build_image.py $(if $(IMAGE),--tag $(IMAGE))

pytest: $(STAMP) vm-deps image-deps
	$(BIN)/pytest

test: lint typecheck pytest

bench: $(STAMP)
	$(BIN)/python -m bench.latency
	$(BIN)/python -m bench.latency_faults
	$(BIN)/python -m bench.rss
	$(BIN)/python -m bench.kube_events
	$(BIN)/python -m bench.probe
	$(BIN)/python -m bench.v2_vm
	$(BIN)/python -m bench.race

# memguard-probe: the liveness probe as one stdlib-only file for application images.
probe-zipapp:
	$(PYTHON) packaging/build_probe_zipapp.py --output build/memguard-probe

clean:
	rm -rf $(VENV) build *.egg-info memguard/_native.*
