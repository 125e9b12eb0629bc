"""scripts/run_bench.py: which files are benchmarks, what a figure line is."""

from __future__ import annotations

from pathlib import Path

from _scripts import load_script

ROOT = Path(__file__).resolve().parents[3]
run_bench = load_script("run_bench")


def test_discover_skips_helpers(tmp_path):
    for name in ("a.py", "b.sh", "_helper.py", "traefik_harness.py", "notes.txt"):
        (tmp_path / name).write_text("")
    (tmp_path / "sub").mkdir()
    assert [p.name for p in run_bench.discover(tmp_path)] == ["a.py", "b.sh"]


def test_figure_lines():
    good = ["lab_up: 2.4 s", "dns_calls_per_sync: 3 calls", "x.y-z: -1.5e3 ms"]
    bad = ["lab up: 2 s", "lab_up: fast", "lab_up: 2", "lab_up 2 s"]
    assert all(run_bench.FIGURE.match(line) for line in good)
    assert not any(run_bench.FIGURE.match(line) for line in bad)


def test_a_benchmark_without_figures_fails(tmp_path):
    script = tmp_path / "silent.py"
    script.write_text("print('hello')\n")
    ok, figures, _ = run_bench.run_one(script, timeout=30)
    assert not ok and figures == []


def test_a_failing_benchmark_fails(tmp_path):
    script = tmp_path / "broken.py"
    script.write_text("print('x: 1 s')\nraise SystemExit(3)\n")
    ok, figures, _ = run_bench.run_one(script, timeout=30)
    assert not ok and figures == ["x: 1 s"]
