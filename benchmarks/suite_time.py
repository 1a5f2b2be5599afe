"""CI time of the test suite: CPU seconds (user+sys, the tests' own processes and the subprocesses they wait for) and
wall seconds per test file, for a baseline revision and this working tree, run back to back with CI's pytest
command (`-n 2 --dist loadfile --no-loadscope-reorder`, OMP_NUM_THREADS=1).

    python benchmarks/suite_time.py --base main            # both arms (each ~9 min on an idle 2-core machine)
    python benchmarks/suite_time.py --base main --only base # or one arm, e.g. to rerun it under the same load

Each arm is a copy of its tree (`git archive`; the working tree's tracked files for "head") run with this
interpreter (the .venv of scripts/setup.sh) and a fresh HF_HOME, so neither reuses the other's datasets cache. Per
file: the sum over its tests of the CPU and wall time from the start of a test's setup to the end of its teardown
(module fixtures fall in the test that builds them; the session's tiny model in the first file of each worker).
Wall clock alone misleads on a shared machine: compare the CPU column, and the load average printed beside it.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# A pytest plugin, written next to each arm: per test file, CPU (self + waited-for children) and wall seconds.
PLUGIN = '''
import json, os, resource, time
import pytest

_files = {}


def _cpu():
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    cpu, wall = _cpu(), time.monotonic()
    yield
    entry = _files.setdefault(item.nodeid.split("::")[0], [0.0, 0.0, 0])
    entry[0] += _cpu() - cpu
    entry[1] += time.monotonic() - wall
    entry[2] += 1


def pytest_sessionfinish(session):
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    with open(os.path.join(os.environ["SUITE_TIME_OUT"], worker + ".json"), "w") as f:
        json.dump(_files, f)
'''


def tree(rev: str | None, dest: Path) -> Path:
    """A copy of `rev` (None: the working tree's tracked files as they are now)."""
    dest.mkdir(parents=True)
    if rev is None:
        files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-c", "--null", "-T", "-", "-f", "-"], cwd=ROOT, input=files, check=True,
                       stdout=open(dest / "tree.tar", "wb"))
        subprocess.run(["tar", "-x", "-f", "tree.tar"], cwd=dest, check=True)
        (dest / "tree.tar").unlink()
    else:
        archive = subprocess.run(["git", "archive", rev], cwd=ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x"], cwd=dest, input=archive, check=True)
    return dest


def run_arm(src: Path, work: Path, pytest_args: list[str]) -> dict:
    out = work / "out"
    out.mkdir()
    (work / "plugin").mkdir()
    (work / "plugin" / "suite_time_plugin.py").write_text(PLUGIN, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": f"{src}:{work / 'plugin'}", "SUITE_TIME_OUT": str(out),
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(work / "hf_home"),
           "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    load_before = os.getloadavg()[0]
    before = os.times()
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "suite_time_plugin", "-n", "2", "--dist",
                           "loadfile", "--no-loadscope-reorder", *pytest_args], cwd=src, env=env,
                          capture_output=True, text=True)
    wall = time.monotonic() - start
    after = os.times()
    files: dict[str, list] = {}
    for part in out.glob("*.json"):
        for name, (cpu, file_wall, n) in json.loads(part.read_text()).items():
            files[name] = [cpu, file_wall, n, part.stem]
    return {"wall": wall, "cpu": (after.children_user - before.children_user) +
            (after.children_system - before.children_system), "load": (load_before, os.getloadavg()[0]),
            "files": files, "summary": proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else "",
            "returncode": proc.returncode}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="main", help="baseline git revision (default: main)")
    parser.add_argument("--only", choices=["base", "head"], help="run one arm only")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args()
    arms = {"base": args.base, "head": None}
    results = {}
    with tempfile.TemporaryDirectory(prefix="suite-time-") as tmp:
        for name, rev in arms.items():
            if args.only and name != args.only:
                continue
            work = Path(tmp) / name
            results[name] = run_arm(tree(rev, work / "src"), work, args.pytest_args)
            r = results[name]
            print(f"{name}: {r['summary']} (exit {r['returncode']}); wall {r['wall']:.0f} s, CPU {r['cpu']:.0f} s, "
                  f"load {r['load'][0]:.1f} -> {r['load'][1]:.1f}", flush=True)
    names = sorted({f for r in results.values() for f in r["files"]},
                   key=lambda f: -max(r["files"].get(f, [0])[0] for r in results.values()))
    print("\n| file | " + " | ".join(f"{a} CPU s | {a} wall s" for a in results) + " |")
    print("|---|" + "---:|---:|" * len(results))
    for f in names:
        cells = [(f"{r['files'][f][0]:.1f} | {r['files'][f][1]:.1f}" if f in r["files"] else "- | -")
                 for r in results.values()]
        print(f"| {f} | " + " | ".join(cells) + " |")
    if len(results) == 2:
        print(f"\nCPU head/base {results['head']['cpu'] / results['base']['cpu']:.2f}, "
              f"wall head/base {results['head']['wall'] / results['base']['wall']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
