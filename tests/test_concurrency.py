"""One model shared by many threads (the explorer caches one per process): hooks attached in
one thread never alter a forward running in another, and nothing deadlocks."""

from __future__ import annotations

import threading
import time
from dataclasses import asdict

import pytest
import torch

from tests.toy import ToyLoop
from workbench.patching import patch
from workbench.sites import Sites

SECONDS = 1.0  # the two threads race at least this long, and until each has made enough calls
DEADLINE = 30.0  # ... but no longer than this
JOIN = 60.0  # a thread still alive after this is stuck

pytestmark = pytest.mark.usefixtures("one_thread")


def race(hooked, plain, min_hooked: int, min_plain: int) -> dict:
    """Run ``hooked()`` and ``plain()`` in a loop in two threads; count calls and wrong outputs."""
    stop = threading.Event()
    stats = {"hooked": 0, "plain": 0, "wrong": 0, "errors": []}

    def loop(fn, key):
        try:
            while not stop.is_set():
                ok = fn()
                stats[key] += 1
                if ok is False:
                    stats["wrong"] += 1
        except Exception as e:  # pragma: no cover - reported below
            stats["errors"].append(repr(e))

    threads = [threading.Thread(target=loop, args=(hooked, "hooked"), daemon=True),
               threading.Thread(target=loop, args=(plain, "plain"), daemon=True)]
    for t in threads:
        t.start()
    start = time.monotonic()
    while time.monotonic() - start < DEADLINE and not stats["errors"]:
        time.sleep(0.05)
        if time.monotonic() - start > SECONDS and stats["hooked"] >= min_hooked and stats["plain"] >= min_plain:
            break
    stop.set()
    for t in threads:
        t.join(JOIN)
    assert not any(t.is_alive() for t in threads), "a thread is stuck: deadlock"
    assert not stats["errors"], stats["errors"]
    return stats


def test_plain_forwards_never_see_another_threads_hooks_toy():
    torch.manual_seed(0)
    model = ToyLoop(d=4, max_steps=5)
    x = torch.randn(3, 4)
    with torch.no_grad():
        ref = model(x, steps=4)

    def hooked():
        with torch.no_grad():
            out = model.run_with_hooks(x, steps=4, fwd_hooks=[("steps.1.hook_pre", lambda a, hook: a * 0 + 5.0)])
            _, cache = model.run_with_cache(x, steps=4, names_filter="steps.2.hook_state")
            with model.hooks(fwd_hooks=[("steps.0.hook_state", lambda a, hook: -a)]):
                inside = model(x, steps=4)  # the owning thread calls the model inside its context
        return not torch.equal(out, ref) and not torch.equal(inside, ref)

    def plain():
        with torch.no_grad():
            return torch.equal(model(x, steps=4), ref)

    stats = race(hooked, plain, min_hooked=20, min_plain=50)
    assert stats["plain"] >= 50 and stats["hooked"] >= 20
    assert stats["wrong"] == 0, f"{stats['wrong']} of {stats['plain'] + stats['hooked']} calls saw another's hooks"
    assert all(not hp.fwd_hooks for hp in model.hook_dict.values())


def test_plain_forwards_never_see_patching_in_another_thread_reasoner():
    from models.reasoner import Reasoner, ReasonerConfig
    from probes.reasoner import patching_setup
    from workbench.tasks import graph_arith as ga

    task = ga.GraphArithConfig(n_nodes=5, n_leaves=2, max_depth=2)
    torch.manual_seed(0)
    model = Reasoner(ReasonerConfig(d_model=16, n_heads=2, d_mlp=32, max_steps=8, task=asdict(task))).eval()
    s = patching_setup(model, n=2, n_nodes=5, seed=0, steps=3)
    kw = s.forward_kwargs
    with torch.no_grad():
        ref = model(s.clean, **kw).value_logits

    def zero_mlp(act, hook):
        return torch.zeros_like(act)

    def hooked():
        with torch.no_grad():
            model.run_with_hooks(s.clean, fwd_hooks=[("steps.1.blocks.0.hook_mlp_out", zero_mlp)], **kw)
        patch(model, s.clean, s.corrupted, s.metric, Sites("steps.*.blocks.0.hook_resid_pre", positions=[3]),
              forward_kwargs=kw)
        return True

    def plain():
        with torch.no_grad():
            return torch.equal(model(s.clean, **kw).value_logits, ref)

    stats = race(hooked, plain, min_hooked=3, min_plain=10)
    assert stats["plain"] >= 10 and stats["hooked"] >= 3
    assert stats["wrong"] == 0, f"{stats['wrong']} of {stats['plain']} plain forwards saw another thread's hooks"


def test_the_lock_is_per_model_reentrant_and_survives_copies():
    import copy
    import pickle

    torch.manual_seed(0)
    a, b = ToyLoop(), ToyLoop()
    assert a.hook_lock is a.hook_lock and a.hook_lock is not b.hook_lock
    x = torch.randn(2, 4)
    with a.exclusive(), a.exclusive():  # re-entrant
        with a.hooks(fwd_hooks=[("steps.0.hook_pre", lambda t, hook: t)]):
            a(x)
    done = threading.Event()
    with a.exclusive():  # another model is not blocked by this one
        threading.Thread(target=lambda: (b(x), done.set()), daemon=True).start()
        assert done.wait(JOIN)
    c = copy.deepcopy(a)
    d = pickle.loads(pickle.dumps(a))
    assert c.hook_lock is not a.hook_lock and torch.equal(c(x), a(x)) and torch.equal(d(x), a(x))
