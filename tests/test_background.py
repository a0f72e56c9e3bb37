"""The explorer's background work (``apps.background``): each step waits for a pause between scripts."""

from __future__ import annotations

import threading
import time

from apps import background


def _script(release: threading.Event) -> threading.Thread:
    """A thread standing for a session's running script until ``release`` is set."""
    thread = threading.Thread(target=release.wait, name=background.SCRIPT_THREAD, daemon=True)
    thread.start()
    return thread


def test_steps_run_in_order_only_after_a_pause_without_scripts():
    release, done = threading.Event(), []
    script = _script(release)
    assert background.script_running()
    worker = background.run_between_scripts(
        [(0.3, lambda: done.append(("first", time.monotonic()))),
         (0.0, lambda: 1 / 0),  # a failing step is skipped, the next one still runs
         (0.3, lambda: done.append(("last", time.monotonic())))], name="test-warm-up")
    time.sleep(0.6)
    assert done == []  # nothing starts while a script runs
    released = time.monotonic()
    release.set()
    script.join()
    worker.join(timeout=60)
    assert not worker.is_alive() and [name for name, _ in done] == ["first", "last"]
    # each after its own quiet time (the script was last seen running up to one poll before it ended)
    assert done[0][1] - released >= 0.3 - 0.06 and done[1][1] - done[0][1] >= 0.3


def test_waiting_gives_up_when_scripts_never_pause():
    release = threading.Event()
    script = _script(release)
    try:
        t0 = time.monotonic()
        assert background.when_quiet(5.0, give_up_s=0.3) is False
        assert time.monotonic() - t0 >= 0.3
    finally:
        release.set()
        script.join()
    assert not background.script_running() and background.when_quiet(0.05, give_up_s=30) is True
