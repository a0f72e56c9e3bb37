"""Basins: perturb the state at step t and see whether the run returns to its answer."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Optional, Union

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from workbench.dynamics.convergence import _commit

from workbench.dynamics.result import DynamicsResult
from workbench.dynamics.states import (
    Readout, StateHooks, VALUE_TOL, _agree, _as_args, _broadcast_items, _check_answers, _fired, _items, _read,
    _run, state_names,
)
from workbench.hooks import map_tensors


def spaced_steps(T: int, k: int) -> list[int]:
    """k steps evenly spaced from 0 to T - 1 (all T when k >= T; the last one when k = 1)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"{k!r} steps: give an integer >= 1")
    if T <= k:
        return list(range(T))
    if k == 1:
        return [T - 1]
    return sorted({round(i * (T - 1) / (k - 1)) for i in range(k)})


def _repeat_batch(obj, k: int, B: int):
    """Every tensor with a batch axis of size B repeated k times along it (copy-major); others kept."""
    return map_tensors(lambda x: x.repeat(k, *[1] * (x.ndim - 1)) if x.ndim and x.shape[0] == B else x, obj)


def noise(state: Tensor, eps: float, generator: torch.Generator, relative: bool = True) -> Tensor:
    """The default perturbation: a random direction per state vector (the last axis), of norm
    ``eps * ||h||`` (relative) or ``eps``."""
    if not torch.is_floating_point(state):
        raise ValueError("noise cannot perturb an integer state (codes); pass perturb=fn(state, eps, generator) "
                         "that returns a changed state, e.g. one wrong code")
    u = torch.randn(state.shape, generator=generator, dtype=torch.float32).to(state)
    u = u / u.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    scale = state.norm(dim=-1, keepdim=True) if relative else torch.ones_like(state[..., :1])
    return state + eps * scale * u


def basin(
    model,
    inputs,
    *,
    readout: Readout,
    state_hooks: Optional[StateHooks] = None,
    state_hook: Optional[StateHooks] = None,
    perturb: Union[str, Callable[[Tensor, float, torch.Generator], Tensor]] = "noise",
    eps: Sequence[float] = (0.01, 0.1, 1.0),
    steps: Union[Sequence[int], int, None] = None,
    samples: int = 4,
    relative: bool = True,
    answer: Optional[Callable[[Any], Tensor]] = None,
    mask=None,
    answers: str = "classes",
    tol: float = VALUE_TOL,
    batch_size: int = 2048,
    resume: bool = True,
    seed: int = 0,
    forward_kwargs: Optional[Mapping] = None,
) -> DynamicsResult:
    """Perturb the state after step t by size eps and follow the rollout: does it return, how fast?

    Every (step t, size eps, sample) is one perturbed copy of the batch; the copies run together,
    stacked along the batch axis (``batch_size`` rows per forward at most): the hook holding the
    state after step t returns the perturbed state of the copies perturbed at t, and the states
    after every later step are read back. The whole grid runs in one forward; with ``resume`` and
    a model that offers the resume protocol on the loop of the state hooks
    (``workbench.hooks.Resumable``: the reasoner, WARP), the copies perturbed at step t run in one
    forward per t that starts at step t from the unperturbed run's state, so no step before t is
    computed again.

    Args:
        readout, state_hooks: the adapters of the module docstring (``state_hook`` is an alias).
        perturb: ``"noise"`` (a random direction per state vector, norm eps * ||h|| with
            ``relative``, else eps) or ``fn(state, eps, generator) -> state`` (e.g. one wrong code).
        steps: the steps t perturbed: a list, an int k (k evenly spaced steps from 0 to T - 1 of
            the steps that ran), or None (all).
        answer: ``fn(model output) -> answers [batch, ...]``; the final answer compared (default: the
            readout of the last state).
        mask: [batch, positions] bool, the answers to keep (e.g. no padding).
        answers: ``"classes"`` (logits or integer predictions) or ``"values"`` (real-valued answers,
            e.g. a forecast: the same when ||a - b|| <= ``tol`` * max(1, ||b||)).
        batch_size: rows per forward (copies x batch); more copies run in further forwards.
        resume: restart at step t where the model can (see above); False: every copy from step 0.

    Returns:
        ``DynamicsResult``: one row per (step, eps, sample, example, pos): ``returns`` (the final
        answer equals the unperturbed run's), ``changed`` (the decoded answer differed from the
        unperturbed run's at some step >= t), ``recovery_time`` (steps after t until the decoded
        answers equal the unperturbed run's at every later step; 0: they never differed; NaN when
        they never do), ``perturbation`` (||h'_t - h_t|| over the example's whole state),
        ``final_distance`` (||h'_{T-1} - h_{T-1}||) and ``ratio`` (final_distance / perturbation:
        < 1 the state itself returns, > 1 it runs away). ``tables["by_step"]``: rates and medians
        per (step, eps).
    """
    hooks = state_hooks if state_hooks is not None else state_hook
    if hooks is None:
        raise ValueError("give state_hooks (the hook of the state after step t, e.g. 'steps.{t}.hook_out')")
    if not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples={samples!r} must be an integer >= 1")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be an integer >= 1 (rows per forward)")
    _check_answers(answers, tol)
    eps = [float(e) for e in eps]
    if not eps or not all(np.isfinite(e) and e >= 0 for e in eps):
        raise ValueError(f"eps={eps!r}: give one or more finite sizes >= 0")
    if isinstance(perturb, str):
        if perturb != "noise":
            raise ValueError(f"perturb={perturb!r}; allowed: 'noise' or a function (state, eps, generator) -> state")
        perturb_fn = lambda s, e, g: noise(s, e, g, relative=relative)  # noqa: E731
    elif callable(perturb):
        perturb_fn = perturb
    else:
        raise ValueError("perturb must be 'noise' or a function (state, eps, generator) -> state")
    args, fk = _as_args(inputs), dict(forward_kwargs or {})
    names = state_names(model, hooks)
    loop = _resume_loop(model, names) if resume else None
    listed = steps is not None and not isinstance(steps, (int, np.integer))
    if listed:
        steps = [int(s) for s in steps]
    wanted = [] if loop is None else sorted({n for t in (steps if listed else range(len(names)))
                                             if 0 <= t < len(names) for n in model.resume_names(t)})
    out0, cache = _run(model, args, fk, [*names, *wanted])
    fired = _fired(names, cache)
    T = len(fired)
    if steps is None:
        steps = list(range(T))
    elif not listed:
        steps = spaced_steps(T, int(steps))
    clean = [cache[n] for n in fired]
    B = int(clean[0].shape[0])
    with torch.no_grad():
        clean_pred = torch.stack([_read(readout(s), B, answers)[0] for s in clean])  # [T, B, P(, D)]
        clean_final = clean_pred[-1] if answer is None else _read(answer(out0), B, answers, "answer(output)")[0]
    P = clean_pred.shape[2]
    bad = [s for s in steps if not 0 <= s < T]
    if bad:
        raise ValueError(f"steps {bad} out of range: this run has steps 0..{T - 1}")
    k = samples
    rows_kept = None if mask is None else np.tile(
        _broadcast_items(_items(mask, B, "mask").bool(), P, "mask").reshape(-1).numpy(), k)
    ex = np.tile(np.repeat(np.arange(B), P), k)
    pos = np.tile(np.arange(P), k * B)
    sample = np.repeat(np.arange(k), B * P)
    grid = [(t, i, e) for t in steps for i, e in enumerate(eps)]  # one copy of k * B rows each
    per_forward = max(1, batch_size // (k * B))
    if loop is not None:  # one forward per perturbed step (and per batch_size rows)
        forwards = [part[j:j + per_forward] for t in dict.fromkeys(steps)
                    for part in [[g for g in grid if g[0] == t]] for j in range(0, len(part), per_forward)]
    else:
        forwards = [grid[j:j + per_forward] for j in range(0, len(grid), per_forward)]
    frames, summary = [], []
    for part in forwards:
        start = None
        t0 = min(t for t, _, _ in part)
        if loop is not None and t0 > 0:
            start = model.resume_state(cache, t0)
        kept, out = _perturbed_run(model, args, fk, fired, part, k, B, perturb_fn, seed, start)
        R = len(part) * k * B
        with torch.no_grad():
            decoded = {n: _read(readout(kept[n]), R, answers)[0] for n in fired[t0:] if n in kept}
            finals = None if answer is None else _read(answer(out), R, answers, "answer(output)")[0]
        for j, (t, i, e) in enumerate(part):
            sl = slice(j * k * B, (j + 1) * k * B)
            ran = [n for n in fired[t:] if n in kept]
            after = [kept[n][sl] for n in ran]
            pred = torch.stack([decoded[n][sl] for n in ran])
            pred = pred.view(len(ran), k, B, *pred.shape[2:])
            final = pred[-1] if finals is None else finals[sl].view(k, B, *clean_final.shape[1:])
            same = _agree(pred, clean_pred[t: t + len(after)][:, None], answers, tol)  # [u, k, B, P]
            recovered = same[-1]
            last_bad = _commit(~same)  # steps after t until every later step agrees
            rec = torch.where(recovered, last_bad.float(), torch.full_like(last_bad, 0).float() + float("nan"))
            returns = _agree(final, clean_final[None], answers, tol).reshape(k * B, -1)
            returns = _broadcast_items(returns, P, "answer").reshape(k, B, P)
            d = lambda a, b: (a.float() - b.float()).reshape(k, B, -1).norm(dim=-1)  # noqa: E731
            rep = lambda x: x.repeat(k, *[1] * (x.ndim - 1))  # noqa: E731
            pert = d(after[0], rep(clean[t]))
            fin = d(after[-1], rep(clean[t + len(after) - 1]))
            ratio = fin / pert.clamp_min(1e-30)
            frame = pd.DataFrame({
                "step": t, "eps": e, "sample": sample, "example": ex, "pos": pos,
                "returns": returns.reshape(-1).numpy(), "changed": (~same).any(0).reshape(-1).numpy(),
                "recovery_time": rec.reshape(-1).numpy(),
                "perturbation": pert[..., None].expand(k, B, P).reshape(-1).numpy(),
                "final_distance": fin[..., None].expand(k, B, P).reshape(-1).numpy(),
                "ratio": ratio[..., None].expand(k, B, P).reshape(-1).numpy(),
            })
            if rows_kept is not None:
                frame = frame[rows_kept]
            frames.append(frame)
            summary.append({"step": t, "eps": e, "n": len(frame), "return_rate": frame["returns"].mean(),
                            "changed_rate": frame["changed"].mean(),
                            "median_recovery_time": frame["recovery_time"].median(),
                            "median_ratio": float(frame["ratio"].median())})
    df = pd.concat(frames, ignore_index=True)
    if P == 1:
        df = df.drop(columns="pos")
    meta = {"steps": T, "perturbed_steps": steps, "eps": eps, "samples": k,
            "perturb": perturb if isinstance(perturb, str) else getattr(perturb, "__name__", "function"),
            "relative": relative, "answers": answers, "tol": tol if answers == "values" else None,
            "forwards": len(forwards), "resumed": loop is not None, "state_hooks": fired}
    return DynamicsResult("basin", df, "returns", meta, {"by_step": pd.DataFrame(summary)})


def _resume_loop(model, names: Sequence[str]) -> Optional[str]:
    """The model's resumable loop when the state hook of step t sits in its step t, else None."""
    from workbench.hooks import resumable

    loop = getattr(model, "resume_loop", None)
    if not resumable(model) or not isinstance(loop, str):
        return None
    return loop if all(_step_of(n, loop) == t for t, n in enumerate(names)) else None


def _step_of(name: str, loop: str) -> Optional[int]:
    from workbench.hooks import split_loop

    found = split_loop(name, loop)
    return None if found is None else found[0]


def _perturbed_run(model, args: tuple, fk: dict, fired: Sequence[str], part: Sequence[tuple[int, int, float]],
                   k: int, B: int, perturb_fn, seed: int, start=None) -> tuple[dict[str, Tensor], Any]:
    """One forward of len(part) perturbed copies (k * B rows each) stacked along the batch axis,
    copy j perturbed after step part[j][0]; ``start``: a ``LoopState`` of one batch to resume from.

    Returns the states after every step from the first perturbed one ({hook: [copies * k * B, ...]})
    and the model's output.
    """
    rows = k * B
    m = len(part)
    at: dict[str, list[tuple[slice, float, torch.Generator]]] = {}
    for j, (t, i, e) in enumerate(part):
        gen = torch.Generator().manual_seed(seed * 1_000_003 + t * 1009 + i)
        at.setdefault(fired[t], []).append((slice(j * rows, (j + 1) * rows), e, gen))

    def hit(act, hook):
        new = act.clone()
        for sl, e, gen in at[hook.name]:
            part_new = perturb_fn(act[sl], e, gen)
            if not isinstance(part_new, Tensor) or part_new.shape != act[sl].shape:
                raise ValueError(f"perturb must return a state of shape {list(act[sl].shape)}")
            new[sl] = part_new
        return new

    kept: dict[str, Tensor] = {}

    def keep(act, hook):
        kept[hook.name] = act.detach()

    first = min(t for t, _, _ in part)
    fwd = [(n, hit) for n in at] + [(n, keep) for n in fired[first:]]
    kw = _repeat_batch(fk, m * k, B)
    if start is not None:
        kw["start"] = start.repeat(m * k)
    with torch.no_grad():
        out = model.run_with_hooks(*_repeat_batch(args, m * k, B), fwd_hooks=fwd, **kw)
    return kept, out
