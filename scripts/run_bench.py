#!/usr/bin/env python3
"""Run every benchmark in bench/ and print its `name: value unit` lines.

A benchmark is a ``bench/*.py`` (run with this Python) or ``bench/*.sh`` file.
Helpers that benchmarks import are skipped: name them ``_*.py`` or
``*_harness.py``. Each benchmark must print lines ``name: value unit``; lines
that do not match are shown on stderr as noise. Exit 1 when any benchmark
failed or printed no figure.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIGURE = re.compile(r"^[A-Za-z0-9_.\-/]+: -?[0-9][0-9.eE+\-]* \S+$")


def discover(bench_dir: Path) -> list[Path]:
    found = []
    for path in sorted(bench_dir.iterdir()):
        if path.suffix not in (".py", ".sh") or not path.is_file():
            continue
        if path.name.startswith("_") or path.stem.endswith("_harness"):
            continue
        found.append(path)
    return found


def run_one(path: Path, timeout: float) -> tuple[bool, list[str], float]:
    cmd = [sys.executable, str(path)] if path.suffix == ".py" else ["bash", str(path)]
    started = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        print(f"{path.name}: timed out after {timeout:.0f}s", file=sys.stderr)
        return False, [], time.monotonic() - started
    figures = []
    for line in proc.stdout.splitlines():
        if FIGURE.match(line.strip()):
            figures.append(line.strip())
        elif line.strip():
            print(f"  [{path.name}] {line}", file=sys.stderr)
    if proc.returncode != 0:
        print(f"{path.name}: exit {proc.returncode}\n{proc.stderr[-2000:]}", file=sys.stderr)
    return proc.returncode == 0 and bool(figures), figures, time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("names", nargs="*", help="only benchmarks whose file name contains one")
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()
    benches = discover(ROOT / "bench")
    if args.names:
        benches = [b for b in benches if any(n in b.name for n in args.names)]
    if not benches:
        print("no benchmark found in bench/", file=sys.stderr)
        return 1
    env_path = f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
    os.environ["PATH"] = env_path
    failed = []
    for path in benches:
        print(f"# {path.name}", flush=True)
        ok, figures, took = run_one(path, args.timeout)
        for figure in figures:
            print(figure, flush=True)
        print(f"# {path.name}: {'ok' if ok else 'FAILED'} in {took:.1f}s", flush=True)
        if not ok:
            failed.append(path.name)
    if failed:
        print(f"benchmarks failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
