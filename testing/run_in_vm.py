"""Run a shell command as root inside a throwaway cgroup v2 VM and return its exit code.

The VM is virtme-ng (``vng``) booting Debian's ``linux-image-amd64`` kernel under QEMU TCG
(``--disable-kvm``: /dev/kvm exists on these hosts but a KVM guest hangs) with the host's
own userspace: the host ``/`` is visible read-only over 9p, ``/etc /usr /var /tmp ...`` are
throwaway overlays, and ``rwdir`` is shared read-write at the same path.  cgroup2 is mounted
at /sys/fs/cgroup with the memory controller.  See tests/vm/NOTES.md for set-up and pitfalls.

Anything missing (qemu, busybox, the kernel, vng) or a VM that does not boot, dies or times
out raises :class:`VMError` (the CLI exits 125): this harness never skips silently.

CLI::

    python testing/run_in_vm.py --rwdir DIR [--memory MIB] [--cpus N] [--timeout S] \
        [--env NAME=VALUE ...] [--verbose] -- CMD...

One CMD word is a shell command line (``-- 'echo hi; exit 3'``); several are joined with
shell quoting (``-- python3 -c 'print(1)'``).  The guest runs it with ``/bin/sh`` (dash).
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import dataclasses
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

BOOT_DIR = "/boot"
MODULES_DIR = "/lib/modules"
QEMU = "qemu-system-x86_64"
# vng hands --rwdir to a `sh -c` line unquoted and splits on '=': keep paths plain.
_SAFE_PATH = re.compile(r"/[A-Za-z0-9._/+-]*")
_STDERR_TAIL = 8192
_KILL_GRACE_S = 5.0
EXIT_VM_ERROR = 125

INSTALL_HINT = (
    "install with: apt-get update && apt-get install -y --no-install-recommends "
    "qemu-system-x86 linux-image-amd64 busybox-static && "
    ".venv/bin/pip install virtme-ng   (see tests/vm/NOTES.md)"
)


class VMError(RuntimeError):
    """The VM could not be set up, did not boot, died, or timed out (never a skip)."""


@dataclasses.dataclass(frozen=True)
class VMResult:
    """Outcome of one VM run; ``stdout``/``stderr`` are empty unless captured."""

    returncode: int
    stdout: bytes
    stderr: bytes
    wall_s: float


@dataclasses.dataclass(frozen=True)
class Tools:
    """What a run needs on the host."""

    kernel: str
    vng: str
    qemu: str


def _kernel_key(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path.name))


def find_kernel(boot_dir: str = BOOT_DIR, modules_dir: str = MODULES_DIR) -> str:
    """Newest /boot/vmlinuz-* that has its /lib/modules (``$MEMGUARD_VM_KERNEL`` wins)."""
    override = os.environ.get("MEMGUARD_VM_KERNEL")
    if override:
        if not os.access(override, os.R_OK):
            raise VMError(f"MEMGUARD_VM_KERNEL={override} is not a readable file")
        return override
    images = sorted(Path(boot_dir).glob("vmlinuz-*"), key=_kernel_key, reverse=True)
    if not images:
        raise VMError(f"no kernel image {boot_dir}/vmlinuz-*; {INSTALL_HINT}")
    for image in images:
        version = image.name.removeprefix("vmlinuz-")
        if os.path.isdir(os.path.join(modules_dir, version)) and os.access(image, os.R_OK):
            return str(image)
    raise VMError(
        f"kernel images {[str(i) for i in images]} have no readable image with modules "
        f"under {modules_dir}/<version> (the guest loads 9p/virtio/brd/ext4 from there); "
        f"{INSTALL_HINT}"
    )


def find_vng() -> str:
    """``vng`` next to this interpreter (the project venv), else on PATH."""
    # Not resolved: a venv's bin/python is a symlink out of the venv.
    beside = Path(sys.executable).parent / "vng"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("vng")
    if found:
        return found
    raise VMError(
        f"virtme-ng's `vng` is neither beside {sys.executable} nor on PATH; {INSTALL_HINT}"
    )


def find_tools() -> Tools:
    """Check every host prerequisite up front and say what is missing."""
    qemu = shutil.which(QEMU)
    if qemu is None:
        raise VMError(f"{QEMU} not found on PATH; {INSTALL_HINT}")
    if shutil.which("busybox") is None:
        raise VMError(
            "busybox not found: vng needs it to build the initramfs that loads the Debian "
            f"kernel's 9p/virtio modules; {INSTALL_HINT}"
        )
    vng = find_vng()
    if not os.access(os.path.join(os.path.dirname(vng), "virtme-run"), os.X_OK):
        raise VMError(f"virtme-run is not beside {vng}; reinstall virtme-ng. {INSTALL_HINT}")
    return Tools(kernel=find_kernel(), vng=vng, qemu=qemu)


def _pump(
    pipe: int,
    echo: Callable[[str], None] | None,
    keep: bytearray | None,
    tail: bytearray,
) -> None:
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    while chunk := os.read(pipe, 65536):
        if keep is not None:
            keep += chunk
        tail += chunk
        del tail[:-_STDERR_TAIL]
        if echo is not None:
            echo(decoder.decode(chunk))
    if echo is not None:
        echo(decoder.decode(b"", final=True))
    os.close(pipe)


def _echo_to(stream_name: str) -> Callable[[str], None]:
    def write(text: str) -> None:
        stream = getattr(sys, stream_name)
        stream.write(text)
        stream.flush()

    return write


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM then SIGKILL the process group of `proc` (its own session: vng's children)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=_KILL_GRACE_S)
            # vng may be gone while its qemu grandchild still is not: finish the group.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            return
        except subprocess.TimeoutExpired:
            continue
    proc.wait()


def _wrapper_script(env: Mapping[str, str], files: dict[str, str]) -> str:
    lines = ["#!/bin/sh", f": > {shlex.quote(files['booted'])}"]
    for name, value in env.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ValueError(f"bad environment variable name {name!r}")
        lines.append(f"export {name}={shlex.quote(value)}")
    lines += [
        f"/bin/sh {shlex.quote(files['command'])}",
        "rc=$?",
        f'echo "$rc" > {shlex.quote(files["rc"])}',
        'exit "$rc"',
    ]
    return "\n".join(lines) + "\n"


def run_in_vm_result(
    command: str,
    rwdir: str,
    memory_mib: int = 1024,
    cpus: int = 2,
    timeout_s: float = 600,
    *,
    env: Mapping[str, str] | None = None,
    capture: bool = False,
    verbose: bool = False,
) -> VMResult:
    """Like :func:`run_in_vm`; with ``capture`` the guest output is returned, not echoed.

    ``verbose`` also streams the guest kernel console to stderr (boot problems).
    """
    if memory_mib < 128 or cpus < 1 or timeout_s <= 0:
        raise ValueError(f"bad VM size or timeout: {memory_mib} MiB, {cpus} cpus, {timeout_s} s")
    tools = find_tools()
    rwdir = os.path.abspath(rwdir)
    if not _SAFE_PATH.fullmatch(rwdir):
        raise VMError(f"rwdir {rwdir!r} must match {_SAFE_PATH.pattern} (vng does not quote it)")
    # vng refuses an rwdir that does not exist ("cannot access ... on the host").
    os.makedirs(rwdir, exist_ok=True)

    # The command goes through a script file in rwdir, never on the kernel command line:
    # a --exec longer than ~1 KiB overflows it and the guest kernel BUGs and hangs at boot.
    # The guest writes `booted` first and `rc` last, so "did not boot" and "died while
    # running" are told apart from the command's own exit code.
    stem = os.path.join(rwdir, f".run_in_vm-{os.getpid()}-{secrets.token_hex(4)}")
    files = {k: f"{stem}.{k}" for k in ("command", "wrapper", "booted", "rc")}
    Path(files["command"]).write_text(command + "\n")
    Path(files["wrapper"]).write_text(_wrapper_script(env or {}, files))

    argv = [
        tools.vng,
        "--run",
        tools.kernel,
        "--user",
        "root",
        "--disable-kvm",
        "--force-9p",  # skip ~5 s of failing virtiofsd attempts before the 9p fallback
        "--memory",
        f"{memory_mib}M",
        "--cpus",
        str(cpus),
        "--rwdir",
        rwdir,
        "--exec",
        f"/bin/sh {files['wrapper']}",
    ]
    if verbose:
        argv.append("--verbose")
    child_env = dict(os.environ)
    # vng starts `virtme-run` through PATH.
    child_env["PATH"] = os.path.dirname(tools.vng) + os.pathsep + child_env.get("PATH", "")

    out_keep = bytearray() if capture else None
    err_keep = bytearray() if capture else None
    out_tail, err_tail = bytearray(), bytearray()
    # Pipes, not our own stdout/stderr: qemu reopens /proc/self/fd/1 and /proc/self/fd/2
    # with O_TRUNC, which would wipe (and then overwrite) a regular file we write to.
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out_w,
            stderr=err_w,
            env=child_env,
            start_new_session=True,  # its own process group: we kill exactly vng + qemu
        )
    except BaseException:
        for fd in (out_r, out_w, err_r, err_w):
            os.close(fd)
        raise
    os.close(out_w)
    os.close(err_w)
    pumps = [
        threading.Thread(
            target=_pump,
            args=(out_r, None if capture else _echo_to("stdout"), out_keep, out_tail),
            daemon=True,
        ),
        threading.Thread(
            target=_pump,
            args=(err_r, None if capture else _echo_to("stderr"), err_keep, err_tail),
            daemon=True,
        ),
    ]
    for pump in pumps:
        pump.start()
    timed_out = False
    try:
        vng_rc = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(proc)
        vng_rc = proc.returncode
    except BaseException:
        _kill_group(proc)
        raise
    finally:
        for pump in pumps:
            pump.join(timeout=10)
    wall_s = time.monotonic() - start

    booted = os.path.exists(files["booted"])
    rc_text = Path(files["rc"]).read_text().strip() if os.path.exists(files["rc"]) else None
    for path in files.values():
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)

    def fail(what: str) -> VMError:
        tail = err_tail.decode("utf-8", "replace").strip()
        return VMError(
            f"{what} (vng exit status {vng_rc}, {wall_s:.0f} s, kernel {tools.kernel}).\n"
            f"command: {shlex.join(argv)}\n"
            f"last vng/guest stderr:\n{tail or '(none)'}\n"
            "Re-run with --verbose (CLI) / verbose=True to see the guest kernel console."
        )

    if timed_out:
        raise fail(f"VM timed out after {timeout_s:.0f} s and was killed (booted: {booted})")
    if not booted:
        raise fail("VM did not boot: the guest never started the command")
    if rc_text is None:
        raise fail("guest died while running the command (kernel panic, init killed, ...)")
    returncode = int(rc_text)
    if returncode != vng_rc:
        raise fail(f"guest command exited {returncode} but vng reported {vng_rc}")
    return VMResult(
        returncode=returncode,
        stdout=bytes(out_keep or b""),
        stderr=bytes(err_keep or b""),
        wall_s=wall_s,
    )


def run_in_vm(
    command: str,
    rwdir: str,
    memory_mib: int = 1024,
    cpus: int = 2,
    timeout_s: float = 600,
    *,
    env: Mapping[str, str] | None = None,
) -> int:
    """Run `command` with /bin/sh as root in a fresh VM; return its exit code.

    Guest stdout/stderr are relayed to ours.  `rwdir` (created if missing) is the only
    host directory the guest can write, at the same path; results go there.  The guest
    starts in our current directory.  Raises :class:`VMError` if anything is missing or
    the VM does not boot, dies, or outlives `timeout_s` (then vng and qemu are killed).
    """
    return run_in_vm_result(command, rwdir, memory_mib, cpus, timeout_s, env=env).returncode


def _parse_env(items: Sequence[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--env wants NAME=VALUE, got {item!r}")
        env[name] = value
    return env


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Run a command as root in a cgroup v2 VM (virtme-ng, QEMU TCG).",
        epilog="Exit status: the guest command's, or 125 with a message if the VM failed.",
    )
    parser.add_argument("--rwdir", required=True, help="host dir shared read-write")
    parser.add_argument("--memory", type=int, default=1024, metavar="MIB")
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=600, metavar="SECONDS")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--verbose", action="store_true", help="show the guest console")
    parser.add_argument("--check", action="store_true", help="only check the host tools")
    parser.add_argument("command", nargs="*", help="after --: the command to run")
    args = parser.parse_args(argv)
    try:
        if args.check:
            tools = find_tools()
            print(f"kernel: {tools.kernel}\nvng: {tools.vng}\nqemu: {tools.qemu}")
            return 0
        if not args.command:
            parser.error("no command given (put it after --)")
        words: list[str] = args.command
        command = words[0] if len(words) == 1 else shlex.join(words)
        return run_in_vm_result(
            command,
            args.rwdir,
            args.memory,
            args.cpus,
            args.timeout,
            env=_parse_env(args.env),
            verbose=args.verbose,
        ).returncode
    except VMError as error:
        print(f"run_in_vm: ERROR: {error}", file=sys.stderr)
        return EXIT_VM_ERROR


if __name__ == "__main__":
    sys.exit(main())
