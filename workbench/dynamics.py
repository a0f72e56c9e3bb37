"""The loop-dynamics lab: what a looped model computes from one step to the next.

Five analyses, each returning a ``Result`` (a tidy DataFrame, extra tables, a Plotly figure)::

    iteration_lens(model, x, state_hooks=..., readout=...)      # the model's own readout after every step
    convergence(model, x, state_hooks=..., readout=...)          # update norms, fixed point?, commit step
    probe_transfer(acts, labels)                                 # a probe fit at step i, tested at step j
    basin(model, x, state_hooks=..., readout=..., eps=[...])     # perturb the state at step t: does it return?
    fixed_points(F, dim=d)                                       # fixed points of a cell h -> F(h), with stability

Steps count from 0 everywhere: step t is the t-th application of the loop, and "the state after
step t" is the activation at the hook that holds it (``steps.{t}.hook_out`` for a
``loop_indexed`` model). A model plugs in with two small adapters, the same for every analysis:

* ``state_hooks``: which hook holds the state after step t: a template with ``{t}``
  (``"steps.{t}.hook_resid_final"``, ``"time.0.ponder.{t}.hook_state"``), a function
  ``t -> name``, or the list of names in step order. The steps analysed are those that fired.
* ``readout``: ``state -> logits`` (``[batch, ..., classes]``; a last axis of size 1 is one binary
  logit, class 1 when > 0) or ``state -> predictions`` (an integer tensor ``[batch, ...]``).
  Every axis between the batch and the classes is an answer *position* (``pos`` in the tables).
  With ``answers="values"`` the readout gives real-valued answers ``[batch, ..., d]`` (a forecast,
  a solution vector), compared by distance: two agree when ``||a - b|| <= tol * max(1, ||b||)``.

plus ``forward_kwargs`` for the model's call (e.g. ``{"steps": 9}``). ``model`` is any
TransformerLens ``HookedRootModule`` with those hooks: the zoo's models, or any PyTorch model
wrapped by ``workbench.loops.loop_indexed``::

    >>> hooked = loop_indexed(model, loops={"steps": model.core}, max_steps=32)
    >>> lens = iteration_lens(hooked, x, state_hooks="steps.{t}.hook_out", readout=model.readout,
    ...                       target=y, forward_kwargs={"steps": 12})
    >>> lens.tables["by_step"]            # accuracy and rank of the final / true answer per step
    >>> lens.figure()

Norms are Euclidean over the state's last axis (one state vector per example and position).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Optional, Union

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from workbench.hooks import map_tensors, template
from workbench.results import Result

__all__ = [
    "DynamicsResult",
    "basin",
    "convergence",
    "fixed_points",
    "iteration_lens",
    "probe_transfer",
    "rollout_states",
    "spaced_steps",
    "state_names",
]

StateHooks = Union[str, Callable[[int], str], Sequence[str]]
Readout = Callable[[Tensor], Tensor]

# the documented fixed-point tolerance: ||one more step|| <= FIXED_ATOL + FIXED_RTOL * ||h||
FIXED_RTOL, FIXED_ATOL = 1e-4, 1e-6


# --------------------------------------------------------------------- the result
class DynamicsResult(Result):
    """A ``Result`` whose figure and summary come from this module (one builder per analysis)."""

    def figure(self, value: Optional[str] = None, **kwargs: Any):
        from workbench import dynamics_figures as df

        builders = {"iteration_lens": df.lens_figure, "convergence": df.convergence_figure,
                    "probe_transfer": df.transfer_figure, "basin": df.basin_figure,
                    "fixed_points": df.fixed_points_figure}
        return builders[self.kind](self, value=value, **kwargs)

    def summary(self, k: int = 10) -> str:
        m, lines = self.meta, [f"{self.kind}: {len(self.df)} rows"]
        if self.kind == "iteration_lens":
            t = self.tables["by_step"]
            t = t[t["layer"].isna()] if "layer" in t else t
            cols = [c for c in ("step", "match_final", "rank_final", "error_final", "accuracy", "rank_target",
                                "error_target") if c in t]
            lines.append(f"{m['steps']} steps, {m['items']} answers; per step:")
            lines.append(t[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        elif self.kind == "convergence":
            lines.append(f"{m['steps']} steps; fixed point (tolerance {m['tolerance']}) in {m['fixed_point_rate']:.1%} "
                         f"of {m['items']} states; median last update {m['median_last_update']:.3g}")
            if m.get("median_commit_step") is not None:
                lines.append(f"median commit step {m['median_commit_step']:.3g} (first step after which the decoded "
                             "answer never changes)")
            if "by_difficulty" in self.tables:
                lines.append(self.tables["by_difficulty"].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        elif self.kind == "probe_transfer":
            d = self.df[self.df.train_step == self.df.test_step]
            lines.append(f"{m['metric']} of a probe fit at step i and tested at step j; diagonal (dotted: control):")
            lines.append(d[["train_step", "score", "control", "selectivity"]].to_string(
                index=False, float_format=lambda v: f"{v:.3f}"))
        elif self.kind == "basin":
            lines.append("return rate (final answer as in the unperturbed run) by step and eps:")
            g = self.tables["by_step"]
            lines.append(g.pivot_table(index="step", columns="eps", values="return_rate").to_string(
                float_format=lambda v: f"{v:.2f}"))
        elif self.kind == "fixed_points":
            lines.append(f"{len(self.df)} fixed points from {m['starts']} starts ({m['converged']} converged)")
            cols = [c for c in ("point", "residual", "norm", "starts", "spectral_radius", "max_real", "stability")
                    if c in self.df]
            lines.append(self.df[cols].head(k).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        return "\n".join(lines)


# --------------------------------------------------------------- state hooks
def _template_regex(tpl: str, keys: tuple[str, ...]) -> re.Pattern:
    parts = re.split(r"\{([^{}]*)\}", tpl)
    out = []
    for i, part in enumerate(parts):
        if i % 2 == 0:
            out.append(re.escape(part))
        elif part in keys:
            out.append(rf"(?P<{part}>\d+)")
        else:
            raise ValueError(f"hook template {tpl!r} has a placeholder {{{part}}}; allowed: "
                             + ", ".join("{" + k + "}" for k in keys))
    return re.compile("^" + "".join(out) + "$")


def _no_match(what: str, tpl: str, names: Sequence[str]) -> ValueError:
    import difflib

    menu = sorted({template(n) for n in names})
    guess = tpl.replace("{t}", "{steps}").replace("{l}", "{blocks}")
    close = difflib.get_close_matches(guess, menu, n=5, cutoff=0.3) or menu[:8]
    return ValueError(f"{what}={tpl!r} matches no hook of this model; hook names look like: {close}")


def state_names(model, state_hooks: StateHooks) -> list[str]:
    """The hook of the state after step t for every step the model has hooks for, in step order.

    ``state_hooks``: a template with ``{t}``, a function ``t -> name`` or a list of names.
    """
    names = list(getattr(model, "hook_dict", {}))
    have = set(names)
    if isinstance(state_hooks, str):
        if "{t}" not in state_hooks:
            raise ValueError(f"state_hooks={state_hooks!r} needs a {{t}} for the step, e.g. 'steps.{{t}}.hook_out'")
        rx = _template_regex(state_hooks, ("t",))
        found = sorted((int(m.group("t")), n) for n in names if (m := rx.match(n)))
        if not found:
            raise _no_match("state_hooks", state_hooks, names)
        return [n for _, n in found]
    if callable(state_hooks):
        out: list[str] = []
        while len(out) < 1_000_000 and (n := state_hooks(len(out))) in have:
            out.append(n)
        if not out:
            raise ValueError(f"state_hooks(0) = {state_hooks(0)!r} is not a hook of this model")
        return out
    out = list(state_hooks)
    if not out or not all(isinstance(n, str) for n in out):
        raise ValueError("state_hooks must be a template with {t}, a function t -> name, or a list of hook names")
    for n in out:
        if n not in have:
            if hasattr(model, "check_hook_name"):
                model.check_hook_name(n)
            raise ValueError(f"{n!r} is not a hook of this model")
    return out


def _layer_names(model, layer_hooks: str) -> dict[tuple[int, int], str]:
    if "{t}" not in layer_hooks or "{l}" not in layer_hooks:
        raise ValueError(f"layer_hooks={layer_hooks!r} needs {{t}} (step) and {{l}} (layer), "
                         "e.g. 'steps.{t}.blocks.{l}.hook_resid_post'")
    rx = _template_regex(layer_hooks, ("t", "l"))
    names = list(model.hook_dict)
    found = {(int(m.group("t")), int(m.group("l"))): n for n in names if (m := rx.match(n))}
    if not found:
        raise _no_match("layer_hooks", layer_hooks, names)
    return found


def _as_args(inputs) -> tuple:
    return tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)


def _run(model, args: tuple, fk: dict, names: Sequence[str]):
    """One forward caching ``names``: (output, {name: activation})."""
    cache: dict[str, Tensor] = {}

    def keep(act, hook):
        cache[hook.name] = act.detach()

    with torch.no_grad():
        out = model.run_with_hooks(*args, fwd_hooks=[(n, keep) for n in dict.fromkeys(names)], **fk)
    return out, cache


def _fired(names: Sequence[str], cache: Mapping[str, Tensor], what: str = "state_hooks") -> list[str]:
    fired = [n for n in names if n in cache]
    if not fired:
        raise ValueError(f"no {what} hook fired in this run (first: {names[0]!r}); check forward_kwargs")
    if fired != list(names[: len(fired)]):
        raise ValueError(f"the {what} hooks that fired are not steps 0..T-1 in order: {fired[:6]}...")
    return fired


def rollout_states(model, inputs, *, state_hooks: StateHooks, forward_kwargs: Optional[Mapping] = None,
                   return_output: bool = False):
    """The state after every step of one run: ``[T, batch, ...]`` (T = the steps that ran).

    >>> acts = rollout_states(hooked, x, state_hooks="steps.{t}.hook_out")   # then probe_transfer(acts, y)
    """
    names = state_names(model, state_hooks)
    out, cache = _run(model, _as_args(inputs), dict(forward_kwargs or {}), names)
    states = torch.stack([cache[n] for n in _fired(names, cache)])
    return (states, out) if return_output else states


# ---------------------------------------------------------------- decoding
def _decode(logits: Tensor, B: int, what: str = "readout") -> tuple[Tensor, Optional[Tensor]]:
    """(predictions [B, P] long, logits [B, P, C] float or None) from a readout's output."""
    if not isinstance(logits, Tensor):
        raise TypeError(f"{what} must return a tensor; got {type(logits).__name__}")
    if logits.shape[:1] != (B,):
        raise ValueError(f"{what} must return [batch={B}, ...]; got {list(logits.shape)}")
    if not torch.is_floating_point(logits):
        return logits.reshape(B, -1).long(), None
    if logits.ndim < 2:
        raise ValueError(f"{what} returned floats of shape {list(logits.shape)}: give logits [batch, ..., classes] "
                         "(a last axis of size 1 is one binary logit) or integer predictions [batch, ...]")
    logits = logits.detach().float()
    if logits.shape[-1] == 1:  # one binary logit: class 1 when > 0
        logits = torch.cat([torch.zeros_like(logits), logits], dim=-1)
    logits = logits.reshape(B, -1, logits.shape[-1])
    return logits.argmax(-1), logits


def _rank(logits: Tensor, labels: Tensor) -> Tensor:
    """[B, P] float: how many classes score strictly higher than ``labels`` (0 = top); NaN if out of range."""
    C = logits.shape[-1]
    ok = (labels >= 0) & (labels < C)
    own = logits.gather(-1, labels.clamp(0, C - 1)[..., None])
    rank = (logits > own).sum(-1).float()
    return torch.where(ok, rank, torch.full_like(rank, float("nan")))


def _items(x, B: int, what: str) -> Tensor:
    t = torch.as_tensor(np.asarray(x)) if not isinstance(x, Tensor) else x
    if t.shape[:1] != (B,):
        raise ValueError(f"{what} must be [batch={B}, ...]; got {list(t.shape)}")
    return t.reshape(B, -1)


def _broadcast_items(x: Tensor, P: int, what: str) -> Tensor:
    if x.shape[1] == P:
        return x
    if x.shape[1] == 1:
        return x.expand(-1, P)
    raise ValueError(f"{what} has {x.shape[1]} answers per example; the readout gives {P}")


def _mean(x: np.ndarray) -> float:
    """The mean of the finite values (NaN when there are none), without a warning."""
    x = np.asarray(x, dtype=float)
    ok = np.isfinite(x)
    return float(x[ok].mean()) if ok.any() else float("nan")


# ------------------------------------------------------------ answers: classes or values
ANSWERS = ("classes", "values")
VALUE_TOL = 0.01  # real-valued answers agree when ||a - b|| <= tol * max(1, ||b||)


def _check_answers(answers: str, tol: float) -> None:
    if answers not in ANSWERS:
        raise ValueError(f"answers={answers!r}; allowed: 'classes' (the readout gives logits or integer "
                         "predictions) or 'values' (real-valued answers such as a forecast, compared by distance)")
    if not (isinstance(tol, (int, float)) and tol >= 0):
        raise ValueError(f"tol={tol!r} must be a number >= 0 (values agree when ||a - b|| <= tol * max(1, ||b||))")


def _values(x, B: int, what: str = "readout") -> Tensor:
    """[B, P, D] float from real-valued answers [B] (one value), [B, D] or [B, ..., D]."""
    if not isinstance(x, Tensor):
        x = torch.as_tensor(np.asarray(x))
    if x.shape[:1] != (B,):
        raise ValueError(f"{what} must return [batch={B}, ...]; got {list(x.shape)}")
    if not torch.is_floating_point(x):
        raise ValueError(f"answers='values' needs real-valued {what} [batch, ..., d]; got {x.dtype}")
    x = x.detach().float()
    x = x[:, None] if x.ndim == 1 else x
    return x.reshape(B, -1, x.shape[-1])


def _read(x, B: int, answers: str, what: str = "readout") -> tuple[Tensor, Optional[Tensor]]:
    """classes: (predictions [B, P] long, logits [B, P, C] or None); values: (answers [B, P, D], None)."""
    return _decode(x, B, what) if answers == "classes" else (_values(x, B, what), None)


def _agree(a: Tensor, b: Tensor, answers: str, tol: float) -> Tensor:
    """[..., P] bool: the answers a and b are the same (classes: equal; values: within tol)."""
    if answers == "classes":
        return a == b
    return (a - b).norm(dim=-1) <= tol * b.norm(dim=-1).clamp_min(1.0)


def _answers_like(x, B: int, P: int, answers: str, what: str) -> Tensor:
    """Given answers (final, target) as [B, P] long (classes) or [B, P, D] float (values)."""
    if answers == "classes":
        return _broadcast_items(_items(x, B, what).long(), P, what)
    v = _values(x, B, what)
    if v.shape[1] == P:
        return v
    if v.shape[1] == 1:
        return v.expand(-1, P, -1)
    raise ValueError(f"{what} has {v.shape[1]} answers per example; the readout gives {P}")


# ------------------------------------------------------------ iteration lens
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


# --------------------------------------------------------------- convergence
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


# ------------------------------------------------------------ probe transfer
def _steps_array(acts) -> tuple[list, list[np.ndarray]]:
    if isinstance(acts, Mapping):
        steps = list(acts)
        arrays = [acts[s] for s in steps]
    else:
        arrays = list(acts)
        steps = list(range(len(arrays)))
    out = []
    for a in arrays:
        a = a.detach().float().cpu().numpy() if isinstance(a, Tensor) else np.asarray(a, dtype=float)
        out.append(a)
    if not out:
        raise ValueError("acts holds no step")
    shapes = {a.shape for a in out}
    if len(shapes) > 1:
        raise ValueError(f"acts have different shapes across steps: {sorted(shapes)}")
    return steps, out


def probe_transfer(
    acts,
    target,
    *,
    probe=None,
    control: Union[str, Any, None] = "shuffle",
    test_size: float = 0.3,
    seed: int = 0,
    standardize: bool = True,
    groups=None,
) -> DynamicsResult:
    """Fit a linear probe on the state at step i and test it at every step j: the whole matrix.

    Args:
        acts: the state at every step: a tensor / array [steps, batch, d] (or [steps, batch, pos, d]
            with a target [batch, pos]), a list of [batch, d], or a dict {step: [batch, d]}
            (e.g. ``rollout_states(...)`` or ``workbench.hooks.stack(cache, ...)``).
        target: [batch] (or [batch, pos]) labels: integers / bools / strings give classification
            (``LogisticRegression``, accuracy), floats regression (``Ridge``, R²).
        probe: ``"logistic"`` (the default for classes: ``LogisticRegression``), ``"ridge"`` (closed
            form and quick: ``RidgeClassifier`` for classes), or a scikit-learn estimator (cloned for
            every fit). Real-valued targets use ``Ridge`` unless an estimator is given.
        control: ``"shuffle"`` (the labels permuted across examples, one permutation for every
            step), an array of control labels of the target's shape (a control task), or None.
        test_size: share of *examples* held out: train and test never share an example, even
            when each example has several positions.
        standardize: z-score the activations (fit on the training examples of step i).
        groups: [batch] ids: rows with the same id count as one example of the split (e.g. several
            answer positions of one problem, flattened into rows); default: every row its own.

    Returns:
        ``DynamicsResult``: one row per (train_step, test_step): ``score`` (accuracy or R² on the
        held-out examples), ``control`` (the same probe recipe on the control labels),
        ``selectivity`` = score - control (R² clamped at 0 first), ``chance`` (the majority class
        share of the test labels; 0 for R²), ``status`` ("ok", or "constant target").
    """
    from sklearn.base import clone
    from sklearn.linear_model import LogisticRegression, Ridge, RidgeClassifier
    from sklearn.model_selection import GroupShuffleSplit
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    steps, arrays = _steps_array(acts)
    y = target.detach().cpu().numpy() if isinstance(target, Tensor) else np.asarray(target)
    shape = arrays[0].shape
    if shape[: y.ndim] != y.shape or len(shape) != y.ndim + 1:
        raise ValueError(f"each step's activations {list(shape)} must be the target's shape {list(y.shape)} plus one "
                         "feature axis ([batch, d] for a [batch] target, [batch, pos, d] for [batch, pos])")
    if groups is None:
        groups = np.repeat(np.arange(y.shape[0]), int(np.prod(y.shape[1:], dtype=int)))
    else:
        groups = np.asarray(groups.detach().cpu() if isinstance(groups, Tensor) else groups)
        if groups.shape != y.shape[:1]:
            raise ValueError(f"groups must be one id per row, shape [{y.shape[0]}]; got {list(groups.shape)}")
        groups = np.repeat(groups, int(np.prod(y.shape[1:], dtype=int)))
    B = len(np.unique(groups))
    X = [a.reshape(-1, a.shape[-1]) for a in arrays]
    y = y.reshape(-1)
    regression = y.dtype.kind == "f"
    rng = np.random.default_rng(seed)
    if control is None:
        yc = None
    elif isinstance(control, str):
        if control != "shuffle":
            raise ValueError(f"control={control!r}; allowed: 'shuffle', an array of control labels, or None")
        yc = y[rng.permutation(len(y))]
    else:
        yc = control.detach().cpu().numpy() if isinstance(control, Tensor) else np.asarray(control)
        if yc.size != y.size:
            raise ValueError(f"control labels must have the target's shape; got {yc.size} labels for {y.size}")
        yc = yc.reshape(-1)
    if not 0 < test_size < 1:
        raise ValueError(f"test_size={test_size} must be in (0, 1)")
    if B < 4:
        raise ValueError(f"probe_transfer needs at least 4 examples to split by example; got {B}")
    train, test = next(GroupShuffleSplit(n_splits=1, test_size=test_size, random_state=seed).split(X[0], y, groups))
    metric = "r2" if regression else "accuracy"

    if isinstance(probe, str) and probe not in ("logistic", "ridge"):
        raise ValueError(f"probe={probe!r}; allowed: 'logistic', 'ridge' or a scikit-learn estimator")

    def make():
        if probe is not None and not isinstance(probe, str):
            base = clone(probe)
        elif regression:
            base = Ridge(alpha=1.0)
        else:
            base = RidgeClassifier(alpha=1.0) if probe == "ridge" else LogisticRegression(max_iter=2000)
        return make_pipeline(StandardScaler(), base) if standardize else base

    def fit(labels):
        if len(np.unique(labels[train])) < 2:
            return None
        fitted = []
        for Xi in X:
            m = make()
            m.fit(Xi[train], labels[train])
            fitted.append(m)
        return fitted

    def scores(fitted, labels):
        """[i, j]: the probe of step i on the held-out rows of step j (one predict per probe)."""
        out = np.full((len(X), len(X)), np.nan)
        if fitted is None:
            return out
        Xt, yt = np.concatenate([Xj[test] for Xj in X]), labels[test]
        for i, m in enumerate(fitted):
            pred = m.predict(Xt).reshape(len(X), len(test))
            if regression:
                ss_tot = float(((yt - yt.mean()) ** 2).sum())
                out[i] = 1 - ((pred - yt) ** 2).sum(1) / ss_tot if ss_tot > 0 else np.nan
            else:
                out[i] = (pred == yt).mean(1)
        return out

    main = scores(fit(y), y)
    ctrl = scores(fit(yc), yc) if yc is not None else np.full_like(main, np.nan)
    if regression:
        chance = 0.0
    else:
        _, counts = np.unique(y[test], return_counts=True)
        chance = float(counts.max() / counts.sum())
    constant = len(np.unique(y[train])) < 2
    rows = []
    for i, si in enumerate(steps):
        for j, sj in enumerate(steps):
            s, c = main[i, j], ctrl[i, j]
            sel = (max(s, 0.0) - max(c, 0.0)) if regression else s - c
            rows.append({"train_step": si, "test_step": sj, "score": s, metric: s, "control": c,
                         "selectivity": sel if np.isfinite(c) else np.nan, "chance": chance,
                         "n_train": len(train), "n_test": len(test),
                         "status": "constant target" if constant else "ok"})
    meta = {"metric": metric, "steps": steps, "control": control if isinstance(control, str) or control is None
            else "labels", "train_examples": int(len(np.unique(groups[train]))),
            "test_examples": int(len(np.unique(groups[test])))}
    return DynamicsResult("probe_transfer", pd.DataFrame(rows), "score", meta)


# -------------------------------------------------------------------- basin
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


# -------------------------------------------------------------- fixed points
def _probe_dtype(step_fn, dim: int) -> torch.dtype:
    for dtype in (torch.float32, torch.float64):
        try:
            with torch.no_grad():
                out = step_fn(torch.zeros(2, dim, dtype=dtype))
        except RuntimeError:
            continue
        if isinstance(out, Tensor) and out.shape == (2, dim):
            return out.dtype if torch.is_floating_point(out) else dtype
        raise ValueError(f"step_fn must map [n, {dim}] states to [n, {dim}]; it returned "
                         f"{list(out.shape) if isinstance(out, Tensor) else type(out).__name__}")
    raise ValueError(f"step_fn fails on float32 and float64 states of shape [n, {dim}]; pass starts= in its dtype")


def _stability(eig: Tensor, kind: str, margin: float) -> tuple[str, float, int]:
    """(label, spectral radius or max real part, eigenvalues on the unstable side)."""
    if kind == "map":
        mag = eig.abs()
        big, small = mag > 1 + margin, mag < 1 - margin
        top = float(mag.max())
    else:
        re_ = eig.real
        big, small = re_ > margin, re_ < -margin
        top = float(re_.max())
    if bool(small.all()):
        label = "stable"
    elif bool(big.all()):
        label = "unstable"
    elif bool(big.any()):
        label = "saddle"
    else:
        label = "marginal"
    return label, top, int(big.sum())


def fixed_points(
    step_fn: Callable[[Tensor], Tensor],
    *,
    dim: Optional[int] = None,
    starts: Optional[Tensor] = None,
    n_starts: int = 64,
    scale: float = 1.0,
    kind: str = "map",
    tol: Optional[float] = None,
    dedup: float = 1e-3,
    max_iter: int = 100,
    margin: float = 1e-6,
    seed: int = 0,
    dtype: Optional[torch.dtype] = None,
) -> DynamicsResult:
    """Fixed points of a recurrent cell F (h = F(h)), each with its Jacobian's eigenvalues.

    Minimises q(h) = ½||F(h) - h||² (``kind="flow"``: ½||F(h)||², the zeros of a vector field
    dh/dt = F(h)) from many starts at once, each start on its own, by damped Gauss-Newton
    (Levenberg-Marquardt) steps h <- h - (JᵀJ + λ s I)^-1 Jᵀ r with r = F(h) - h, J = dF/dh - I
    from torch autograd, λ shrinking after a step that lowers q and growing after one that does
    not (gradient descent far from a fixed point, Newton's method near one; at most ``max_iter``
    steps). Converged candidates, with ||F(h) - h|| <= tol * max(1, ||h||) (``tol`` defaults to
    1e-6 for float32 states, 1e-9 for float64: about ten times the rounding of F(h) - h), are
    merged when closer than ``dedup * max(1, ||h||)``; each fixed point gets the Jacobian of F
    there (``torch.autograd.functional.jacobian``), its eigenvalues and a label: for a map,
    "stable" (every |lambda| < 1), "unstable" (every |lambda| > 1), "saddle" (some of each), else
    "marginal" (some |lambda| within ``margin`` of 1); for a flow the same with Re lambda vs 0.

    Args:
        step_fn: F, mapping a batch of states [n, d] to [n, d], each row on its own (e.g. ACT's
            cell at a fixed input: ``lambda s: model.cell_step(x.expand(len(s), -1), s)``; the gain
            circuit's Euler step). Its parameters are not changed and get no gradient.
        dim / starts: the state size with random starts (``n_starts`` of them, N(0, scale²)), or
            the starts themselves [n, d] (e.g. states visited in a rollout).
        dtype: of the random starts (default: float32, or float64 when F only takes that).

    A cell with a slow manifold (a saturated GRU gate: F(h) ~ h far from the data) has many
    near-fixed points there; start from states the model visits (``starts=rollout_states(...)``
    flattened to [n, d]) to find the ones that matter. ``meta["start_residuals"]`` keeps
    ||F(h) - h|| of every start after optimisation (slow points have small, nonzero values).

    Returns:
        ``DynamicsResult``: one row per fixed point: ``residual`` (||F(h) - h||), ``norm``, ``starts``
        (how many starts converged to it), ``spectral_radius`` (map) or ``max_real`` (flow),
        ``unstable_directions``, ``stability``. ``tables["eigenvalues"]`` one row per eigenvalue;
        ``meta["points"]`` [k, d] and ``meta["jacobians"]`` [k, d, d] (numpy).
    """
    if kind not in ("map", "flow"):
        raise ValueError(f"kind={kind!r}; allowed: 'map' (h = F(h)) or 'flow' (F(h) = 0)")
    if starts is None:
        if dim is None:
            raise ValueError("give dim (the state size) or starts [n, d]")
        dtype = dtype or _probe_dtype(step_fn, dim)
        gen = torch.Generator().manual_seed(seed)
        starts = scale * torch.randn(n_starts, dim, generator=gen, dtype=torch.float64).to(dtype)
    else:
        starts = torch.as_tensor(starts)
        if starts.ndim != 2:
            raise ValueError(f"starts must be [n, d]; got {list(starts.shape)}")
        if not torch.is_floating_point(starts):
            starts = starts.to(dtype or torch.get_default_dtype())
    n, d = starts.shape

    def residual(h: Tensor) -> Tensor:
        out = step_fn(h)
        if out.shape != h.shape:
            raise ValueError(f"step_fn must map [n, {d}] to [n, {d}]; got {list(out.shape)}")
        return out - h if kind == "map" else out

    if tol is None:  # about the precision F can be evaluated to
        tol = 1e-6 if starts.dtype in (torch.float32, torch.float16, torch.bfloat16) else 1e-9
    eye = torch.eye(d, dtype=starts.dtype)
    with torch.no_grad():
        h = starts.detach().clone()
        r = residual(h)
    cost = r.pow(2).sum(-1)
    lam = torch.full((n,), 1e-3, dtype=torch.float64)
    J = torch.zeros(n, d, d, dtype=h.dtype)
    stale = torch.ones(n, dtype=torch.bool)  # rows whose Jacobian must be (re)computed
    done = lambda: torch.isfinite(cost) & (cost.sqrt() <= tol * h.norm(dim=-1).clamp_min(1.0))  # noqa: E731
    for _ in range(max_iter):
        active = ~done() & (lam < 1e12) & torch.isfinite(cost)
        if not bool(active.any()):
            break
        idx = active.nonzero()[:, 0]
        fresh = idx[stale[idx]]
        if len(fresh):
            Jf = _row_jacobians(step_fn, h[fresh])
            J[fresh] = Jf - eye if kind == "map" else Jf
            stale[fresh] = False
        Ja, ra = J[idx], r[idx]
        Jt = Ja.transpose(1, 2)
        H, g = Jt @ Ja, (Jt @ ra[..., None])[..., 0]
        scale_ = H.diagonal(dim1=1, dim2=2).mean(-1).clamp_min(1e-12)
        damped = H + (lam[idx].to(H.dtype) * scale_)[:, None, None] * eye
        try:
            step = torch.linalg.solve(damped, g[..., None])[..., 0]
        except RuntimeError:  # a singular row: least squares for this round
            step = torch.linalg.lstsq(damped, g[..., None]).solution[..., 0]
        new = h[idx] - step
        with torch.no_grad():
            r_new = residual(new)
        c_new = r_new.pow(2).sum(-1)
        ok = torch.isfinite(c_new) & (c_new < cost[idx])
        acc = idx[ok]
        h[acc], r[acc], cost[acc] = new[ok], r_new[ok], c_new[ok]
        stale[acc] = True
        lam[idx] = torch.where(ok, (lam[idx] / 3).clamp_min(1e-12), lam[idx] * 4)
    res = cost.sqrt()
    ok = done()
    order = torch.argsort(torch.where(ok, res, torch.full_like(res, float("inf"))))
    points, counts, resid = [], [], []
    for i in order.tolist():
        if not bool(ok[i]):
            break
        for j, p in enumerate(points):
            if float((h[i] - p).norm()) <= dedup * max(1.0, float(p.norm())):
                counts[j] += 1
                break
        else:
            points.append(h[i])
            counts.append(1)
            resid.append(float(res[i]))
    rows, eig_rows, jacobians = [], [], []
    if points:
        P_ = torch.stack(points)
        J = _row_jacobians(step_fn, P_)
        for k, (p, c, r) in enumerate(zip(points, counts, resid)):
            eig = torch.linalg.eigvals(J[k].double())
            label, top, n_bad = _stability(eig, kind, margin)
            rows.append({"point": k, "residual": r, "norm": float(p.norm()), "starts": c,
                         ("spectral_radius" if kind == "map" else "max_real"): top,
                         "unstable_directions": n_bad, "stability": label, "status": "ok"})
            for i, lam in enumerate(eig.tolist()):
                eig_rows.append({"point": k, "index": i, "real": lam.real, "imag": lam.imag, "abs": abs(lam),
                                 "stability": label})
            jacobians.append(J[k].numpy())
    cols = ["point", "residual", "norm", "starts", "spectral_radius" if kind == "map" else "max_real",
            "unstable_directions", "stability", "status"]
    df = pd.DataFrame(rows, columns=cols)
    meta = {"kind": kind, "starts": int(n), "converged": int(ok.sum()), "tol": tol, "dedup": dedup,
            "points": (torch.stack(points).numpy() if points else np.zeros((0, d))),
            "jacobians": np.stack(jacobians) if jacobians else np.zeros((0, d, d)),
            "start_residuals": res.numpy()}
    eig_cols = ["point", "index", "real", "imag", "abs", "stability"]
    return DynamicsResult("fixed_points", df, "residual", meta,
                          {"eigenvalues": pd.DataFrame(eig_rows, columns=eig_cols)})


def _row_jacobians(step_fn, h: Tensor) -> Tensor:
    """[n, d, d]: the Jacobian of F at every row of h, from one Jacobian of sum_i F(h)_i."""
    from torch.autograd.functional import jacobian

    f = lambda x: step_fn(x).sum(0)  # noqa: E731
    try:  # all d output rows in one batched backward
        J = jacobian(f, h.detach(), vectorize=True)  # [d_out, n, d_in]
    except RuntimeError:  # a step function that vmap cannot batch: one backward per output row
        J = jacobian(f, h.detach())
    return J.permute(1, 0, 2).detach()
