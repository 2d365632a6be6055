"""gpu_bench.py writes its runs into a markdown results file, newest first;
a JSON written on a GPU machine can be added afterwards (--from-json)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _bench():
    spec = importlib.util.spec_from_file_location("gpu_bench_under_test", BENCH / "gpu_bench.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_runs_are_prepended_with_machine_commit_table_and_verdicts(tmp_path: Path) -> None:
    bench = _bench()
    runs = sorted((BENCH / "runs").glob("*.json"))
    assert runs, "the recorded GPU runs are part of the repository"
    document = json.loads((BENCH / "runs" / "2026-11-27-h200-7dc5d7a.json").read_text(encoding="utf-8"))
    results = tmp_path / "RESULTS.md"
    older = {**document, "finished_unix": 1_000_000_000}
    bench.write_results(results, older, "aaaaaaa")
    bench.write_results(results, {**document, "finished_unix": 2_000_000_000}, "bbbbbbb")
    text = results.read_text(encoding="utf-8")
    assert text.startswith("# GPU benchmark results")
    assert text.index("commit bbbbbbb") < text.index("commit aaaaaaa")
    assert text.count("## ") == 2
    newest = text[text.index("commit bbbbbbb") : text.index("commit aaaaaaa")]
    assert "NVIDIA H200" in newest
    points = document["embedding"]["points"]
    rows = [line for line in newest.splitlines() if line.startswith("| ") and line.split("|")[1].strip().isdigit()]
    assert [int(row.split("|")[1]) for row in rows] == [p["batch"] for p in points]
    for target in document["targets"]:
        assert f"| {target['target']} | {target['measured']} |" in newest
    assert newest.count("FAIL") == sum(not p["pass"] for p in points) + sum(not t["pass"] for t in document["targets"])
