"""Convergence: update norms, whether the loop reaches a fixed point, and the step each answer commits."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Optional

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from workbench.dynamics.result import DynamicsResult
from workbench.dynamics.states import (
    FIXED_ATOL, FIXED_RTOL, Readout, StateHooks, VALUE_TOL, _agree, _broadcast_items, _check_answers, _items,
    _read, rollout_states, state_names,
)


def _vectors(states: Tensor) -> Tensor:
    """[T, B, ...] -> [T, B, P, D] float: one state vector (the last axis) per example and position."""
    s = states.float()
    if s.ndim == 2:  # [T, B]: a scalar state
        return s[:, :, None, None]
    if s.ndim == 3:
        return s[:, :, None, :]
    return s.reshape(s.shape[0], s.shape[1], -1, s.shape[-1])


def _commit(differs: Tensor) -> Tensor:
    """differs [T, ...] bool (the answer at step t differs from the final one) -> [...] the first step t
    after which it never differs."""
    T = differs.shape[0]
    idx = torch.arange(T).view(T, *[1] * (differs.ndim - 1)).expand_as(differs)
    last = torch.where(differs, idx, torch.full_like(idx, -1)).amax(0)
    return last + 1


def convergence(
    model,
    inputs,
    *,
    state_hooks: StateHooks,
    readout: Optional[Readout] = None,
    difficulty=None,
    step_fn: Optional[Callable[[Tensor], Tensor]] = None,
    mask=None,
    rtol: float = FIXED_RTOL,
    atol: float = FIXED_ATOL,
    answers: str = "classes",
    tol: float = VALUE_TOL,
    forward_kwargs: Optional[Mapping] = None,
) -> DynamicsResult:
    """How the state settles: update norms, distance to the final state, fixed point, commit step.

    Per example and position (one state vector = the state's last axis) and step t:
    ``update_norm`` = ||h_t - h_{t-1}|| (empty at t = 0), ``relative_update`` = that / ||h_t||,
    ``dist_to_final`` = ||h_t - h_{T-1}||, ``cos_update`` = the cosine between successive updates
    (h_t - h_{t-1}, h_{t-1} - h_{t-2}; from t = 2), and with a ``readout`` the decoded ``pred``.

    **Fixed point.** The state after the last step h = h_{T-1} is a fixed point when one more step
    moves it by at most ``atol + rtol * ||h||`` (defaults 1e-6 and 1e-4). With ``step_fn`` (the
    step as a function F of the state) one more step is computed: ||F(h) - h||. Without it the
    last update ||h_{T-1} - h_{T-2}|| stands for it: a loop that applies the same map F at every
    step has h_{T-1} = F(h_{T-2}), so a repeated state is an exact fixed point, and a small last
    update bounds ||F(h) - h|| by F's Lipschitz constant times it. Loops whose step depends on t
    (a schedule, a step embedding) need ``step_fn``.

    **Commit step.** With a ``readout``: the first step t after which the decoded answer never
    changes (pred_s = pred_{T-1} for every s >= t); 0 when the first step already has it. When the
    readout gives one answer per example while the state has positions, the commit is per example.
    With ``answers="values"`` (a real-valued readout, e.g. a forecast) an answer "does not change"
    while it stays within ``tol`` * max(1, ||final||) of the final one.

    Args:
        difficulty: one number per example ([batch]); tables gain a ``difficulty`` column and
            ``tables["by_difficulty"]`` (fixed-point rate, commit step by difficulty).
        step_fn: F(h) for states of the hooked shape [batch, ...], for the direct fixed-point check.
        mask: [batch, positions] bool, the states to keep (e.g. no padding).

    Returns:
        ``DynamicsResult``: ``df`` one row per (example, pos, step); ``tables["examples"]`` one row
        per (example, pos): ``steps``, ``last_update``, ``one_more_step``, ``fixed_point``,
        ``commit_step``, ``final_pred``, ``difficulty``.
    """
    states, _ = rollout_states(model, inputs, state_hooks=state_hooks, forward_kwargs=forward_kwargs,
                               return_output=True)
    T, B = states.shape[:2]
    v = _vectors(states)  # [T, B, P, D]
    P = v.shape[2]
    nan = torch.full((1, B, P), float("nan"))
    norms = v.norm(dim=-1)
    upd = v[1:] - v[:-1]
    upd_norm = torch.cat([nan, upd.norm(dim=-1)])
    rel = upd_norm / norms.clamp_min(1e-30)
    dist = (v - v[-1:]).norm(dim=-1)
    if T >= 3:
        cos = torch.nn.functional.cosine_similarity(upd[1:], upd[:-1], dim=-1, eps=1e-30)
        cos = torch.where((upd[1:].norm(dim=-1) > 0) & (upd[:-1].norm(dim=-1) > 0), cos, torch.nan)
        cos = torch.cat([nan, nan, cos])
    else:
        cos = torch.cat([nan] * T)
    # one more step
    if step_fn is not None:
        with torch.no_grad():
            nxt = step_fn(states[-1])
        if not isinstance(nxt, Tensor) or nxt.shape != states[-1].shape:
            raise ValueError(f"step_fn must map a state {list(states[-1].shape)} to one of the same shape; got "
                             f"{list(nxt.shape) if isinstance(nxt, Tensor) else type(nxt).__name__}")
        more = (_vectors(nxt[None])[0] - v[-1]).norm(dim=-1)
    elif T >= 2:
        more = upd_norm[-1]
    else:
        more = torch.full((B, P), float("nan"))
    fixed = more <= atol + rtol * norms[-1]
    # decoded answers and the commit step
    preds = changed = commit = None
    if readout is not None:
        _check_answers(answers, tol)
        with torch.no_grad():
            preds = torch.stack([_read(readout(states[t]), B, answers)[0] for t in range(T)])  # [T, B, Q(, D)]
        commit = _commit(~_agree(preds, preds[-1:], answers, tol))  # [B, Q]
        changed = torch.cat([torch.zeros_like(commit, dtype=torch.bool)[None],
                             ~_agree(preds[1:], preds[:-1], answers, tol)])  # [T, B, Q]
        if answers == "values":
            preds = None  # no one column holds a vector answer
        if commit.shape[1] != P:
            if commit.shape[1] == 1:
                commit, changed = commit.expand(-1, P), changed.expand(-1, -1, P)
                preds = None if preds is None else preds.expand(-1, -1, P)
            else:  # answers do not line up with state positions: commit per example
                commit = commit.amax(1, keepdim=True).expand(-1, P)
                preds = changed = None
    diff = None
    if difficulty is not None:
        diff = np.asarray(difficulty.detach().cpu() if isinstance(difficulty, Tensor) else difficulty)
        if diff.shape != (B,):
            raise ValueError(f"difficulty must be one number per example, shape [{B}]; got {list(diff.shape)}")
    ex, pos = np.repeat(np.arange(B), P), np.tile(np.arange(P), B)
    frames = []
    for t in range(T):
        cols = {"step": t, "example": ex, "pos": pos, "update_norm": upd_norm[t].reshape(-1).numpy(),
                "relative_update": rel[t].reshape(-1).numpy(), "dist_to_final": dist[t].reshape(-1).numpy(),
                "cos_update": cos[t].reshape(-1).numpy(), "norm": norms[t].reshape(-1).numpy()}
        if preds is not None:
            cols["pred"] = preds[t].reshape(-1).numpy()
        if changed is not None:
            cols["changed"] = changed[t].reshape(-1).numpy()
        if diff is not None:
            cols["difficulty"] = diff[ex]
        frames.append(pd.DataFrame(cols))
    df = pd.concat(frames, ignore_index=True)
    ex_cols = {"example": ex, "pos": pos, "steps": T, "last_update": upd_norm[-1].reshape(-1).numpy(),
               "one_more_step": more.reshape(-1).numpy(), "fixed_point": fixed.reshape(-1).numpy(),
               "final_norm": norms[-1].reshape(-1).numpy()}
    if commit is not None:
        ex_cols["commit_step"] = commit.reshape(-1).numpy()
        if preds is not None:
            ex_cols["final_pred"] = preds[-1].reshape(-1).numpy()
    if diff is not None:
        ex_cols["difficulty"] = diff[ex]
    examples = pd.DataFrame(ex_cols)
    if mask is not None:
        keep = _broadcast_items(_items(mask, B, "mask").bool(), P, "mask").reshape(-1).numpy()
        df, examples = df[np.tile(keep, T)].reset_index(drop=True), examples[keep].reset_index(drop=True)
        fixed = torch.tensor(examples["fixed_point"].to_numpy(dtype=bool))
    if P == 1:
        df, examples = df.drop(columns="pos"), examples.drop(columns="pos")
    tables = {"examples": examples}
    if diff is not None:
        agg = {"n": ("fixed_point", "size"), "fixed_point_rate": ("fixed_point", "mean"),
               "median_last_update": ("last_update", "median")}
        if commit is not None:
            agg.update(mean_commit_step=("commit_step", "mean"), median_commit_step=("commit_step", "median"))
        tables["by_difficulty"] = examples.groupby("difficulty", as_index=False).agg(**agg)
    meta = {"steps": T, "items": len(examples), "positions": P, "tolerance": f"atol {atol:g} + rtol {rtol:g} * ||h||",
            "rtol": rtol, "atol": atol, "answers": answers if readout is not None else None,
            "one_more_step": "step_fn" if step_fn is not None else "last update",
            "fixed_point_rate": float(fixed.float().mean()),
            "median_last_update": float(np.nanmedian(examples["last_update"])) if T >= 2 else float("nan"),
            "median_commit_step": float(examples["commit_step"].median()) if commit is not None else None,
            "state_hooks": state_names(model, state_hooks)[:T]}
    return DynamicsResult("convergence", df, "update_norm", meta, tables)
