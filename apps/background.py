"""Work the explorer's server does in the background, between the scripts of its sessions.

A background thread holds the interpreter while it runs (imports, figure building), so a click
answered meanwhile is answered slower. Each step here starts only after a pause in which no
session's script ran (Streamlit runs every script in a thread named ``ScriptRunner.scriptThread``),
so the work fills the time a user spends reading, not the time they wait.

    run_between_scripts([(0.2, build_figures), (1.5, import_torch)], name="explorer-warm-up")
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Sequence

SCRIPT_THREAD = "ScriptRunner.scriptThread"


def script_running() -> bool:
    """Whether a session's script is running now."""
    return any(t.name == SCRIPT_THREAD for t in threading.enumerate())


def when_quiet(quiet_s: float, give_up_s: float = 60.0, poll_s: float = 0.05) -> bool:
    """Wait until no script has run for ``quiet_s`` seconds: True, or False after ``give_up_s``
    of scripts with shorter pauses between them (the caller goes on then: the work is needed)."""
    now = time.monotonic()
    end, quiet_since = now + give_up_s, now
    while (now := time.monotonic()) < end:
        if script_running():
            quiet_since = now
        elif now - quiet_since >= quiet_s:
            return True
        time.sleep(poll_s)
    return False


def run_between_scripts(steps: Sequence[tuple[float, Callable[[], object]]], name: str) -> threading.Thread:
    """Start a daemon thread running each ``(quiet_s, step)`` in order, once no script has run
    for ``quiet_s`` seconds. A step that fails is skipped: whatever needs its work does it again
    in the foreground and reports the error there."""
    def work() -> None:
        for quiet_s, step in steps:
            when_quiet(quiet_s)
            try:
                step()
            except Exception:  # noqa: BLE001 - see above
                pass

    thread = threading.Thread(target=work, name=name, daemon=True)
    thread.start()
    return thread
