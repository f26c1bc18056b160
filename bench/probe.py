"""Wall time of `memguard probe` against `python3 -c pass`, interleaved in one run.

    .venv/bin/python -m bench.probe [--runs 20] [--python /usr/bin/python3]

Target (DESIGN.md): <= 40 ms wall per probe run. Every way of running it is
timed --runs times, round-robin so that machine noise hits all alike: the
venv's console script (`memguard probe`, through memguard.cli.entry's fast path),
`python -m memguard.probe`, and the zipapp built by
packaging/build_probe_zipapp.py run by --python (an application image's
python3: the default skips pyenv shims, which cost ~50 ms themselves) with and
without `-I -S`, and through its #! line. The probe reads a fake cgroup v1
directory at 87 % of its limit, so every run reads, decides and writes a WARN
line (to /dev/null); one more case reads this machine's real cgroup. Each run
must exit 0. Results go to bench/results/probe.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_PATH = os.path.join(ROOT, "bench", "results", "probe.json")
BUILDER = os.path.join(ROOT, "packaging", "build_probe_zipapp.py")
TARGET_MS = 40.0
MIB = 1024 * 1024
BASELINE = "python3 -c pass"

Case = tuple[str, list[str], dict[str, str]]


def _write(path: str, text: str) -> None:
    with open(path, "w") as file:
        file.write(text)


def make_fake_v1_cgroup(root: str) -> list[str]:
    """A cgroup v1 tree at 87 % of a 1 GiB limit; the probe flags that read it."""
    directory = os.path.join(root, "memory", "kubepods", "pod1", "ctr")
    os.makedirs(directory)
    _write(os.path.join(directory, "memory.usage_in_bytes"), f"{900 * MIB}\n")
    _write(os.path.join(directory, "memory.limit_in_bytes"), f"{1024 * MIB}\n")
    stat = f"cache {100 * MIB}\ninactive_file {9 * MIB}\ntotal_inactive_file {9 * MIB}\n"
    _write(os.path.join(directory, "memory.stat"), stat)
    proc_self_cgroup = os.path.join(root, "proc-self-cgroup")
    _write(proc_self_cgroup, "4:memory:/kubepods/pod1/ctr\n1:cpu:/\n0::/\n")
    return ["--cgroup-root", root, "--proc-self-cgroup", proc_self_cgroup]


def build_zipapp(output: str, interpreter: str) -> str:
    command = [sys.executable, BUILDER, "--output", output, "--python", interpreter]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return output


CONSOLE_SCRIPT = """\
#!{python}
import re
import sys
from memguard.cli.entry import main
if __name__ == '__main__':
    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])
    sys.exit(main())
"""


def installed_venv(python: str, workdir: str) -> str:
    """A venv with memguard as a wheel installs it (no editable finder); its bin/."""
    venv = os.path.join(workdir, "venv")
    subprocess.run([python, "-m", "venv", "--without-pip", venv], check=True)
    version = subprocess.run(
        [python, "-c", "import sys; print(f'python{sys.version_info[0]}.{sys.version_info[1]}')"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    site_packages = os.path.join(venv, "lib", version, "site-packages")
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(os.path.join(ROOT, "memguard"), os.path.join(site_packages, "memguard"),
                    ignore=ignore)  # fmt: skip
    script = os.path.join(venv, "bin", "memguard")
    _write(script, CONSOLE_SCRIPT.format(python=os.path.join(venv, "bin", "python")))
    os.chmod(script, 0o755)
    return os.path.join(venv, "bin")


def application_python() -> str:
    """python3 as an application image has it: not a pyenv shim, not this venv."""
    found = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")
    return found or sys.executable


def cases(python: str, workdir: str) -> list[Case]:
    venv_python = sys.executable
    console_script = os.path.join(os.path.dirname(venv_python), "memguard")
    probe = ["probe", "--warning", "85", "--failure", "95", "--logfile", "/dev/null"]
    fake = [*probe, *make_fake_v1_cgroup(os.path.join(workdir, "cgroup"))]
    zipapp = build_zipapp(os.path.join(workdir, "memguard-probe"), "/usr/bin/env python3")
    zipapp_is = build_zipapp(os.path.join(workdir, "memguard-probe-IS"), f"{python} -IS")
    env_path = {"PATH": f"{os.path.dirname(python)}:/usr/bin:/bin"}
    installed = installed_venv(python, workdir)
    return [
        (BASELINE, [python, "-c", "pass"], {}),
        ("python3 -I -S -c pass", [python, "-I", "-S", "-c", "pass"], {}),
        ("dev venv python -c pass", [venv_python, "-c", "pass"], {}),
        ("memguard probe (dev venv, editable)", [console_script, *fake], {}),
        ("dev venv python -m memguard.probe", [venv_python, "-m", "memguard.probe", *fake[1:]], {}),
        ("memguard probe (installed)", [os.path.join(installed, "memguard"), *fake], {}),
        (
            "installed python -m memguard.probe",
            [os.path.join(installed, "python"), "-m", "memguard.probe", *fake[1:]],
            {},
        ),
        ("python3 memguard-probe (zipapp)", [python, zipapp, *fake], {}),
        ("python3 -I -S memguard-probe (zipapp)", [python, "-I", "-S", zipapp, *fake], {}),
        ("memguard-probe, #!/usr/bin/env python3", [zipapp, *fake], env_path),
        ("memguard-probe, #!python3 -IS", [zipapp_is, *fake], {}),
        ("python3 -I -S memguard-probe, real cgroup", [python, "-I", "-S", zipapp, *probe], {}),
    ]


def time_once_ms(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(
        command,
        env={**os.environ, **env},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    elapsed_ms = (time.perf_counter() - started) * 1000
    if result.returncode != 0:
        raise RuntimeError(f"{command} exited {result.returncode}: {result.stderr.decode()}")
    return elapsed_ms


def p90(values_ms: list[float]) -> float:
    """Nearest-rank 90th percentile."""
    ordered = sorted(values_ms)
    return ordered[math.ceil(0.9 * len(ordered)) - 1]


def measure(all_cases: list[Case], runs: int) -> dict[str, list[float]]:
    walls_ms: dict[str, list[float]] = {name: [] for name, _, _ in all_cases}
    for _ in range(runs):
        for name, command, env in all_cases:
            walls_ms[name].append(time_once_ms(command, env))
    return walls_ms


def summarize(all_cases: list[Case], walls_ms: dict[str, list[float]]) -> list[dict[str, object]]:
    baseline_ms = statistics.median(walls_ms[BASELINE])
    rows: list[dict[str, object]] = []
    for name, command, _ in all_cases:
        median_ms = statistics.median(walls_ms[name])
        rows.append(
            {
                "name": name,
                "command": command,
                "median_ms": round(median_ms, 2),
                "p90_ms": round(p90(walls_ms[name]), 2),
                "min_ms": round(min(walls_ms[name]), 2),
                "over_baseline_ms": round(median_ms - baseline_ms, 2),
                "meets_target": median_ms <= TARGET_MS,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--python", default=application_python(), help="python3 for the zipapp")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="memguard-bench-probe-") as workdir:
        all_cases = cases(args.python, workdir)
        time_once_ms(all_cases[3][1], {})  # warm the page cache once, untimed
        rows = summarize(all_cases, measure(all_cases, args.runs))
    version = subprocess.run([args.python, "--version"], capture_output=True, text=True)
    result = {
        "runs": args.runs,
        "python": f"{args.python} ({version.stdout.strip()})",
        "venv_python": f"{sys.executable} ({sys.version.split()[0]})",
        "baseline": BASELINE,
        "target_ms": TARGET_MS,
        "cases": rows,
    }
    os.makedirs(os.path.dirname(RESULTS_PATH), exist_ok=True)
    with open(RESULTS_PATH, "w") as file:
        json.dump(result, file, indent=2)
        file.write("\n")
    print(f"{'case':45} {'median':>8} {'p90':>8} {'- base':>8}  (ms, {args.runs} runs)")
    for row in rows:
        print(
            f"{row['name']:45} {row['median_ms']:8.1f} {row['p90_ms']:8.1f} "
            f"{row['over_baseline_ms']:+8.1f}"
        )
    print(f"written to {RESULTS_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
