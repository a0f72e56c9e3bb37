"""The iteration lens: the model's own readout applied to the state after every step."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from workbench.dynamics.result import DynamicsResult
from workbench.dynamics.states import (
    Readout, StateHooks, VALUE_TOL, _agree, _answers_like, _as_args, _broadcast_items, _check_answers, _fired,
    _items, _layer_names, _mean, _rank, _read, _run, state_names,
)


def iteration_lens(
    model,
    inputs,
    *,
    state_hooks: StateHooks,
    readout: Readout,
    target=None,
    layer_hooks: Optional[str] = None,
    layer_readout: Optional[Readout] = None,
    final=None,
    mask=None,
    answers: str = "classes",
    tol: float = VALUE_TOL,
    forward_kwargs: Optional[Mapping] = None,
) -> DynamicsResult:
    """The model's own readout applied to the state after every step (and every layer inside one).

    Args:
        model, inputs: a hooked model and its input (or a tuple of positional inputs), batch first.
        state_hooks, readout: the adapters of the module docstring.
        target: the true answers, [batch] or [batch, positions] (integers; ``answers="values"``:
            [batch, ..., d] floats), or a function ``t -> answers`` when every step has its own
            (a forecaster's next value), optional.
        layer_hooks: a template with ``{t}`` and ``{l}`` (``"steps.{t}.blocks.{l}.hook_resid_post"``):
            also read the residual after every layer inside a step (``layer_readout``, default
            ``readout``, maps it to logits).
        final: the final answers to compare with (default: the readout of the last state).
        mask: [batch, positions] bool, the answers to keep (e.g. no padding).
        answers: ``"classes"`` (the readout gives logits or integer predictions) or ``"values"``
            (real-valued answers [batch, ..., d], e.g. a forecast: compared by distance, and the
            same when ||a - b|| <= ``tol`` * max(1, ||b||)).
        forward_kwargs: keyword arguments of the model's call.

    Returns:
        ``DynamicsResult`` ``df``: one row per (step, layer, example, pos) read: ``pred``, ``final``,
        ``matches_final``, ``rank_final`` (0 = the final answer is the top class), and with a target
        ``target``, ``correct``, ``rank_target``, ``prob_target``. With ``answers="values"``:
        ``error_final`` (||pred - final||), ``matches_final``, and with a target ``error_target``,
        ``correct`` (within tol). ``layer`` is empty for the state after the step.
        ``tables["by_step"]``: the means per step and layer.
    """
    _check_answers(answers, tol)
    args, fk = _as_args(inputs), dict(forward_kwargs or {})
    names = state_names(model, state_hooks)
    layers = _layer_names(model, layer_hooks) if layer_hooks else {}
    _, cache = _run(model, args, fk, [*names, *layers.values()])
    fired = _fired(names, cache)
    T = len(fired)
    B = int(cache[fired[0]].shape[0])
    reads: list[tuple[int, Optional[int], str, Tensor]] = []
    with torch.no_grad():
        for t, name in enumerate(fired):
            for (tt, l), lname in sorted(layers.items()):
                if tt == t and lname in cache:
                    reads.append((t, l, lname, (layer_readout or readout)(cache[lname])))
            reads.append((t, None, name, readout(cache[name])))
    decoded = [(t, l, n, *_read(x, B, answers)) for t, l, n, x in reads]
    P = decoded[-1][3].shape[1]
    fin = decoded[-1][3] if final is None else _answers_like(final, B, P, answers, "final")
    if target is None or callable(target):
        target_at = (lambda t: None) if target is None else (  # noqa: E731
            lambda t: _answers_like(target(t), B, P, answers, f"target({t})"))
    else:
        tgt = _answers_like(target, B, P, answers, "target")
        target_at = lambda t: tgt  # noqa: E731
    keep = None if mask is None else _broadcast_items(_items(mask, B, "mask").bool(), P, "mask").reshape(-1).numpy()
    ex, pos = np.repeat(np.arange(B), P), np.tile(np.arange(P), B)
    if keep is not None:
        ex, pos = ex[keep], pos[keep]
    m = len(ex)
    columns: dict[str, list] = {}
    summary = []
    for t, l, name, pred, logits in decoded:
        if pred.shape[1] != P:
            raise ValueError(f"the readout of {name!r} gives {pred.shape[1]} answers per example; the last state's "
                             f"gives {P}")
        tgt = target_at(t)
        cols: dict[str, Any] = {}
        if answers == "classes":
            cols["pred"], cols["final"] = pred.reshape(-1).numpy(), fin.reshape(-1).numpy()
        cols["matches_final"] = _agree(pred, fin, answers, tol).reshape(-1).numpy()
        if answers == "values":
            cols["error_final"] = (pred - fin).norm(dim=-1).reshape(-1).numpy()
            if tgt is not None:
                cols["error_target"] = (pred - tgt).norm(dim=-1).reshape(-1).numpy()
                cols["correct"] = _agree(pred, tgt, answers, tol).reshape(-1).numpy()
        else:
            cols["rank_final"] = (_rank(logits, fin) if logits is not None else torch.full((B, P), float("nan"))
                                  ).reshape(-1).numpy()
            if tgt is not None:
                cols["target"] = tgt.reshape(-1).numpy()
                cols["correct"] = cols["pred"] == cols["target"]
                if logits is not None:
                    cols["rank_target"] = _rank(logits, tgt).reshape(-1).numpy()
                    probs = logits.softmax(-1).gather(-1, tgt.clamp(0, logits.shape[-1] - 1)[..., None])[..., 0]
                    cols["prob_target"] = probs.reshape(-1).numpy()
                else:
                    cols["rank_target"] = cols["prob_target"] = np.full(B * P, np.nan)
        if keep is not None:
            cols = {c: v[keep] for c, v in cols.items()}
        cols = {"step": np.full(m, t), "layer": np.full(m, np.nan if l is None else l), "hook": np.full(m, name),
                "example": ex, "pos": pos, **cols}
        for c, v in cols.items():
            columns.setdefault(c, []).append(v)
        row = {"step": t, "layer": l, "hook": name, "n": m, "match_final": _mean(cols["matches_final"])}
        extra = ("error_final", "correct", "error_target") if answers == "values" else (
            "rank_final", "correct", "rank_target", "prob_target")
        for c in extra:
            if c in cols:
                row["accuracy" if c == "correct" else c] = _mean(cols[c])
        summary.append(row)
    df = pd.DataFrame({c: np.concatenate(v) for c, v in columns.items()})
    df["layer"] = df["layer"].astype("Int64")
    if P == 1:
        df = df.drop(columns="pos")
    by_step = pd.DataFrame(summary)
    by_step["layer"] = by_step["layer"].astype("Int64")
    if not layers:
        df, by_step = df.drop(columns="layer"), by_step.drop(columns="layer")
    has_target = target is not None
    meta = {"steps": T, "items": m, "positions": P, "state_hooks": fired,
            "layer_hooks": layer_hooks, "has_target": has_target, "answers": answers,
            "tol": tol if answers == "values" else None}
    return DynamicsResult("iteration_lens", df, "correct" if has_target else "matches_final", meta,
                          {"by_step": by_step})
