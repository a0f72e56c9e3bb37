"""bench/patching.py runs end to end on its smallest case and reports what its docstring promises."""

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_patching_benchmark_runs_and_agrees_with_the_loop(tmp_path):
    out = tmp_path / "patching.json"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "patching.py"), "--cases", "act", "--loop-sites", "4",
                           "--seconds", "0", "--min-rounds", "4", "--out", str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(out.read_text())
    assert summary["threads"] == 1
    (case,) = summary["cases"]
    assert case["case"] == "act" and case["sites"] == 20 and case["loop_sites_timed"] == 4
    assert case["rounds"] == 4  # patch and the bound's forwards timed in interleaved rounds: --min-rounds, no more
    assert all(len(case["round_seconds"][k]) == 4 for k in ("exact", "batch", "rows"))
    assert case["max_abs_diff_vs_loop"] <= 1e-5  # patch and the independent per-site loop agree
    s = case["seconds"]
    for key in ("exact", "exact_wall", "loop_extrapolated", "lower_bound", "floor"):
        assert math.isfinite(s[key]) and s[key] > 0, key
    assert math.isclose(case["speedup_vs_loop"], s["loop_extrapolated"] / s["exact"])
    assert math.isclose(case["ratio_to_lower_bound"], s["exact"] / s["lower_bound"])
    # one joined pass over the 20 ponder steps: patch fires each block once, as one run does,
    # so the cost model over its own schedule is the floor
    assert case["block_firings"] == {"run": 20, "patch": 20}
    assert math.isclose(s["floor_schedule"], s["floor"])
    assert math.isclose(case["floor_schedule_to_lower_bound"], s["floor_schedule"] / s["lower_bound"])
    assert "act" in done.stdout and "targets:" in done.stdout
