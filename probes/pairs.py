"""The contract of a patching experiment, checked on every clean / corrupted pair.

A family's ``patching_setup`` returns pairs that keep two promises, and says which pair
breaks one when they do not hold:

1. **The corruption changes the target** (the exact solver's answer to the corrupted input
   differs from the clean one), so there is something for a patch to restore.
2. **The model tells the two apart**: on every pair the metric of the clean run exceeds the
   metric of the corrupted run by at least ``margin`` (in the metric's units). A pair the
   model gets the other way round would pull the normalised scores of every site towards
   nonsense (scores of 0.95-1.26 for a patch that restores nothing).

Inputs a user passes in are checked and rejected with a ``ValueError`` naming the pairs; inputs
a setup samples itself are drawn until ``n`` pairs keep the contract (the description says
how many were drawn).

>>> gaps = metric_gaps(model, clean, corrupted, metric, {"steps": 9})   # [B] clean - corrupted
>>> check(changed, gaps, margin=1e-3, labels=[f"problem {i}" for i in range(B)])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["MARGIN", "metric_gaps", "check", "broken", "select"]

MARGIN = 1e-3  # the default: each pair's clean metric exceeds its corrupted metric by this much


@torch.no_grad()
def metric_gaps(model, clean, corrupted, metric: Callable, forward_kwargs: Mapping[str, Any] | None = None
                ) -> np.ndarray:
    """[B] metric(clean run) - metric(corrupted run), pair by pair."""
    fk = dict(forward_kwargs or {})
    c = clean if isinstance(clean, (tuple, list)) else (clean,)
    r = corrupted if isinstance(corrupted, (tuple, list)) else (corrupted,)
    m_clean = torch.as_tensor(metric(model(*c, **fk))).detach().float().cpu()
    m_corr = torch.as_tensor(metric(model(*r, **fk))).detach().float().cpu()
    return (m_clean - m_corr).numpy()


def broken(changed: Sequence[bool] | np.ndarray | None, gaps: np.ndarray, margin: float) -> list[tuple[int, str]]:
    """(pair index, what is broken) for every pair that breaks the contract."""
    out = []
    gaps = np.asarray(gaps, dtype=float)
    changed = np.ones(len(gaps), bool) if changed is None else np.asarray(changed, bool)
    for i, (ch, g) in enumerate(zip(changed, gaps)):
        if not ch:
            out.append((i, "the corruption leaves the target unchanged"))
        elif not np.isfinite(g) or g < margin:
            out.append((i, f"metric clean - corrupted = {g:.4g} < margin {margin:g}"))
    return out


def check(changed, gaps: np.ndarray, margin: float, labels: Sequence[str] | None = None, what: str = "pair") -> None:
    """Raise ``ValueError`` naming every pair that breaks the contract (see the module docstring)."""
    bad = broken(changed, gaps, margin)
    if not bad:
        return
    labels = list(labels) if labels is not None else [f"{what} {i}" for i in range(len(gaps))]
    shown = "; ".join(f"{labels[i]}: {why}" for i, why in bad[:10])
    more = f"; and {len(bad) - 10} more" if len(bad) > 10 else ""
    raise ValueError(
        f"{len(bad)} of {len(gaps)} clean / corrupted {what}s break the patching contract (the corruption must "
        f"change the target, and the metric of the clean run must exceed the corrupted run's by margin={margin:g}): "
        f"{shown}{more}. Drop these {what}s, or pass a smaller margin if the model is meant to be weak.")


def select(sample: Callable[[int], list], build: Callable[[list], Any], gaps_of: Callable[[Any], np.ndarray],
           changed_of: Callable[[Any], np.ndarray], n: int, margin: float, max_draws: int | None = None
           ) -> tuple[Any, int]:
    """Draw candidate pairs until ``n`` keep the contract; returns (setup of those n, pairs drawn).

    ``sample(k)`` draws k candidate pairs; ``build(pairs)`` makes the experiment; ``gaps_of`` /
    ``changed_of`` read its per-pair metric gaps and target changes. The first draw is exactly
    ``n`` pairs, so a model that keeps the contract on them gets the same pairs as without the
    check. The kept pairs are checked once more in the final experiment (the number of loop
    steps can depend on the batch).
    """
    max_draws = max_draws or max(50, 20 * n)
    kept: list = []
    drawn = 0
    while drawn < max_draws:
        k = n - len(kept) if not drawn else max(2 * (n - len(kept)), 4)
        cands = sample(min(k, max_draws - drawn))
        drawn += len(cands)
        pool = kept + cands
        exp = build(pool)
        ok = [not b for b in _flags(changed_of(exp), gaps_of(exp), margin)]
        kept = [p for p, good in zip(pool, ok) if good][:n]
        if len(kept) == n:
            exp = build(kept)
            ok = [not b for b in _flags(changed_of(exp), gaps_of(exp), margin)]
            if all(ok):
                return exp, drawn
            kept = [p for p, good in zip(kept, ok) if good]
    raise ValueError(
        f"only {len(kept)} of {drawn} sampled clean / corrupted pairs keep the patching contract (a changed target "
        f"and a metric of the clean run above the corrupted run's by margin={margin:g}); the model does not tell "
        f"the two apart on this task. Pass your own inputs, a smaller n, or a smaller margin.")


def _flags(changed, gaps, margin) -> list[bool]:
    bad = {i for i, _ in broken(changed, gaps, margin)}
    return [i in bad for i in range(len(gaps))]
