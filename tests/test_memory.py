"""workbench.memory: a process that imports workbench reuses the memory it frees.

Each case runs in a fresh interpreter: the allocator setting is process-wide and permanent.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="the allocator setting is glibc's")

# frees 300 MB of 3 MB tensors (a cache's activations are blocks of this size) and allocates them
# again; reports resident memory (MB) before, after the free and after the second allocation,
# read from /proc, not from the module under test
PROGRAM = """
import json, os, torch
import workbench
from workbench.memory import keeps_freed_memory

def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

torch.ones(1)  # load torch's allocator paths before the baseline
base = rss_mb()
blocks = [torch.ones(3 * 2**18) for _ in range(100)]
held = rss_mb()
del blocks
freed = rss_mb()
blocks = [torch.ones(3 * 2**18) for _ in range(100)]
again = rss_mb()
print(json.dumps({"kept": keeps_freed_memory(), "base": base, "held": held, "freed": freed, "again": again}))
"""


def run(env_value: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "WORKBENCH_KEEP_FREED_MEMORY"}
    if env_value is not None:
        env["WORKBENCH_KEEP_FREED_MEMORY"] = env_value
    proc = subprocess.run([sys.executable, "-c", PROGRAM], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_freed_memory_stays_with_the_process_and_is_reused():
    m = run(None)
    assert m["kept"]
    assert m["held"] - m["base"] > 250  # the blocks really were resident
    assert m["freed"] - m["base"] > 250  # freeing them kept their pages ...
    assert m["again"] - m["freed"] < 30  # ... and the second allocation reused them


def test_the_environment_variable_leaves_the_allocator_alone():
    for off in ("0", "off"):
        m = run(off)
        assert not m["kept"]
        assert m["held"] - m["base"] > 250
        assert m["freed"] - m["base"] < 50  # glibc's default: the pages went back to the kernel
