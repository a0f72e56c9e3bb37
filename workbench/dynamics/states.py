"""The two adapters every analysis shares: the hooks that hold the state after step t, and the
readout that turns a state into answers (classes or values); rollouts and decoding."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Optional, Union

import numpy as np
import torch
from torch import Tensor

from workbench.hooks import template


StateHooks = Union[str, Callable[[int], str], Sequence[str]]
Readout = Callable[[Tensor], Tensor]

# the documented fixed-point tolerance: ||one more step|| <= FIXED_ATOL + FIXED_RTOL * ||h||
FIXED_RTOL, FIXED_ATOL = 1e-4, 1e-6


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
