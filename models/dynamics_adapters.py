"""The loop-dynamics lab (``workbench.dynamics``) on the zoo: one set of adapters per family.

``models.registry`` names, for every family with a loop, its ``Dynamics`` entry (torch-free:
which analyses apply and where the adapters live); this module holds the adapters themselves
(they need torch and the model) and ``run``, which draws the family's own inputs and runs one
analysis::

    >>> from models import dynamics_adapters as da
    >>> model = models.load("reasoner")
    >>> a = da.adapters(model)                  # Adapters: state_hooks, readout(model), inputs(model, n, seed), ...
    >>> res = da.run(model, "convergence", n=8, seed=0)
    >>> print(res.summary()); res.figure()

Analyses (``ANALYSES`` in ``models.registry``): ``lens`` (``iteration_lens``), ``convergence``,
``transfer`` (``probe_transfer`` on ``rollout_states``), ``basin`` and ``fixed-points``
(``fixed_points`` of the family's cell at the input of the first example, started from visited
states). Which apply to a family: ``models.registry.get(name).dynamics.analyses``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor

from models import registry
from models.registry import ANALYSES

__all__ = ["ANALYSES", "Adapters", "Batch", "adapters", "run", "splat", "ADAPTERS"]


@dataclass
class Batch:
    """One draw of a family's inputs, with what the analyses compare against.

    ``target``: true answers [batch] or [batch, pos] (integers) for the lens; ``difficulty``:
    [batch] for convergence (the reasoner: the problem's depth); ``mask``: [batch, pos] bool, the answers that count;
    ``probe``: the probe target of ``transfer`` ([batch]; floats: regression) with ``probe_name``;
    ``position``: [batch] long, the one answer position per example ``transfer`` reads (models
    with positions), else None.
    """

    inputs: Any
    target: Optional[Tensor] = None
    difficulty: Optional[Tensor] = None
    mask: Optional[Tensor] = None
    probe: Optional[np.ndarray] = None
    probe_name: str = ""
    position: Optional[Tensor] = None
    forward_kwargs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Adapters:
    """What one family gives the lab.

    ``state_hooks``: the hook of the state after step t (a template with ``{t}``);
    ``inputs(model, n, seed) -> Batch``; ``readout(model) -> (state -> logits or int predictions)``
    or None (no decoded answer: lens and basin do not apply); ``layer_hooks``: a template with
    ``{t}`` and ``{l}`` for the lens inside a step; ``step_fn(model, batch) -> (F, dim)``: the
    cell F(h) on [n, d] rows at the first example's input (None: fixed points do not apply, e.g.
    attention mixes the rows); ``max_probe_steps``: ``transfer`` reads at most this many steps
    (evenly spaced), ``max_basin_steps`` likewise for ``basin``.
    """

    family: str
    state_hooks: str
    inputs: Callable[[Any, int, int], Batch]
    readout: Optional[Callable[[Any], Callable[[Tensor], Tensor]]] = None
    layer_hooks: Optional[str] = None
    step_fn: Optional[Callable[[Any, Batch], tuple[Callable[[Tensor], Tensor], int]]] = None
    max_probe_steps: int = 16
    max_basin_steps: int = 8
    default_n: int = 16
    transfer_n: int = 256  # the default n of ``transfer`` (a probe needs more examples than the others)
    notes: str = ""

    @property
    def analyses(self) -> tuple[str, ...]:
        """The analyses these adapters support."""
        out = ["convergence", "transfer"]
        if self.readout is not None:
            out = ["lens", *out, "basin"]
        if self.step_fn is not None:
            out.append("fixed-points")
        return tuple(a for a in ANALYSES if a in out)


# -------------------------------------------------------------------- reasoner
def _reasoner_inputs(model, n: int, seed: int) -> Batch:
    from models.reasoner_data import encode_batch

    problems = registry.sample(model, n, seed)
    arr = encode_batch(problems, model.cfg)
    tokens = torch.from_numpy(arr["factors"])
    mask = torch.from_numpy(arr["slot"])
    answer = torch.from_numpy(arr["answer"])
    depth = torch.from_numpy(arr["depth"])
    # transfer: one answer per problem, at its deepest computed position
    deep = torch.where(mask, depth, torch.full_like(depth, -1)).argmax(1)
    rows = torch.arange(len(problems))
    steps = model.cfg.steps_for_depth(max(p.depth for p in problems))
    return Batch(tokens, target=answer, difficulty=torch.tensor([p.depth for p in problems]), mask=mask, probe=answer[rows, deep].numpy(),
                 probe_name="value at the deepest node", position=deep, forward_kwargs={"steps": steps})


def _reasoner_readout(model):
    return lambda h: model.heads[3](model.ln_final(h))


# ------------------------------------------------------------------------- ACT
def _act_inputs(model, n: int, seed: int) -> Batch:
    if model.cfg.task_name != "parity":
        raise ValueError(f"the dynamics adapters of ACT cover parity models; this one was trained on "
                         f"{model.cfg.task_name!r}")
    from models.act_data import parity_batch
    from workbench.tasks import parity as par

    problems = par.sample(registry.task_of(model), n, np.random.default_rng(seed))
    x = parity_batch(problems)["inputs"]
    return Batch(x, target=torch.from_numpy(problems.target.astype(np.int64)),
                 difficulty=torch.from_numpy(problems.n_nonzero), probe=problems.target.astype(int),
                 probe_name="parity")


def _act_readout(model):
    return lambda s: model.readout(model.hidden_of(s))


def _act_step(model, batch: Batch):
    x = batch.inputs[0, 0]
    x0 = torch.cat([x, x.new_zeros(1)])[None]  # a later ponder step (first-step flag 0)

    def F(s: Tensor) -> Tensor:
        return model.cell_step(x0.to(s.dtype).expand(len(s), -1), s)

    return F, model.cfg.state_size


# ------------------------------------------------------------------- WARP, GRU
def _sequence_inputs(model, n: int, seed: int) -> Batch:
    from workbench.tasks import dynamics as dy

    task = registry.task_of(model)
    if not isinstance(task, dy.DynamicsConfig):
        raise ValueError(f"the dynamics adapters of {type(model).__name__} cover the dynamical-system tasks; "
                         f"this model was trained on {type(task).__name__}")
    trajs = dy.sample(task, n, np.random.default_rng(seed))
    x = torch.from_numpy(dy.stack(trajs)).float()
    name = sorted(trajs[0].params)[0]
    fk = {"mode": "recurrent"} if type(model).__name__ == "Warp" else {}
    return Batch(x, probe=np.array([t.params[name] for t in trajs], dtype=float),
                 probe_name=f"physical parameter {name}", forward_kwargs=fk)


def _warp_step(model, batch: Batch):
    A = model.A.detach()
    return (lambda th: th @ A.T.to(th.dtype)), model.cfg.d_theta  # a constant input: du = 0


def _gru_step(model, batch: Batch):
    u0 = batch.inputs[:, -1].mean(0, keepdim=True)

    def F(h: Tensor) -> Tensor:
        return model.cell(u0.to(h.dtype).expand(len(h), -1), h)

    return F, model.cfg.hidden


# ------------------------------------------------------------------------ gain
def _gain_inputs(model, n: int, seed: int) -> Batch:
    stimuli = registry.sample(model, n, seed)
    theta = torch.tensor([s.orientation for s in stimuli], dtype=torch.float64)
    return Batch(theta, probe=np.cos(2 * np.radians(theta.numpy())), probe_name="cos(2 x orientation)",
                 forward_kwargs={"steps": model.cfg.max_steps})


def _gain_readout(model):
    return lambda r: r.argmax(-1)  # the population's peak neuron (integer predictions)


def _gain_step(model, batch: Batch):
    f = model.feedforward(batch.inputs[:1]).detach()
    g = model.gain_set(None).detach()
    k, W = model.cfg.dt / model.cfg.tau, model.W.detach()

    def F(r: Tensor) -> Tensor:  # one Euler step of tau dr/dt = -r + G (f + W r) at the first stimulus
        return r + k * (g * (f + r @ W.T) - r)

    return F, model.n


ADAPTERS: dict[str, Adapters] = {
    "reasoner": Adapters("reasoner", "steps.{t}.hook_resid_final", _reasoner_inputs, readout=_reasoner_readout,
                         layer_hooks="steps.{t}.blocks.{l}.hook_resid_post", default_n=8, max_basin_steps=5,
                         transfer_n=64,
                         notes="state: the residual after each step; readout: the value head; no fixed points "
                               "(attention mixes positions)"),
    "act": Adapters("act", "time.0.ponder.{t}.hook_state", _act_inputs, readout=_act_readout, step_fn=_act_step,
                    default_n=64, notes="state: the cell state after each ponder step; readout: the output logit"),
    "warp": Adapters("warp", "time.{t}.hook_theta", _sequence_inputs, step_fn=_warp_step, default_n=16,
                     notes="state: theta_t (recurrent mode); no class readout; fixed points of theta -> theta A^T"),
    "gru": Adapters("gru", "time.{t}.hook_hidden", _sequence_inputs, step_fn=_gru_step, default_n=16,
                    notes="state: the hidden state; no class readout; fixed points of the cell at a constant input"),
    "gain": Adapters("gain", "time.{t}.hook_rates", _gain_inputs, readout=_gain_readout, step_fn=_gain_step,
                     default_n=16, notes="state: the rates after each Euler step; readout: the peak neuron"),
}
# what ``models.registry`` names ("models.dynamics_adapters:REASONER", ...)
REASONER, ACT, WARP, GRU, GAIN = (ADAPTERS[k] for k in ("reasoner", "act", "warp", "gru", "gain"))


# ------------------------------------------------------------------------ API
def adapters(model) -> Adapters:
    """The adapters of a model's family (``ValueError`` when the family has no loop adapters)."""
    family = registry.family_of(model)
    if family.dynamics is None:
        raise ValueError(f"the dynamics lab does not cover the {family.label} family")
    found = registry._resolve(family.dynamics.adapters)
    return found(model) if callable(found) and not isinstance(found, Adapters) else found


def splat(model, a: Adapters, batch: Batch) -> dict:
    """The keyword arguments shared by ``iteration_lens`` / ``convergence`` / ``basin``."""
    out = {"state_hooks": a.state_hooks, "forward_kwargs": dict(batch.forward_kwargs)}
    if a.readout is not None:
        out["readout"] = a.readout(model)
    if batch.mask is not None:
        out["mask"] = batch.mask
    return out


def _spaced(T: int, k: int) -> list[int]:
    if T <= k:
        return list(range(T))
    return sorted({round(i * (T - 1) / (k - 1)) for i in range(k)})


def _need(a: Adapters, analysis: str) -> None:
    if analysis not in ANALYSES:
        raise ValueError(f"unknown analysis {analysis!r}; allowed: {', '.join(ANALYSES)}")
    if analysis not in a.analyses:
        raise ValueError(f"{analysis!r} does not apply to the {a.family} family ({a.notes}); "
                         f"allowed: {', '.join(a.analyses)}")


@torch.no_grad()
def _rollout(model, a: Adapters, batch: Batch) -> Tensor:
    from workbench import dynamics as dyn

    return dyn.rollout_states(model, batch.inputs, state_hooks=a.state_hooks, forward_kwargs=batch.forward_kwargs)


def run(model, analysis: str, n: Optional[int] = None, seed: int = 0, **options):
    """Run one dynamics analysis on ``n`` fresh inputs of the model's task; returns its ``DynamicsResult``.

    ``analysis``: one of ``ANALYSES`` that applies to the family; ``n``: inputs (default: the
    family's ``default_n``, ``transfer_n`` for ``transfer``); ``options`` go to the analysis function (e.g. ``eps=[0.1]`` for basin).
    The result's ``meta`` gains ``model_family``, ``analysis``, ``n``, ``seed`` and ``probe_target``.
    """
    from workbench import dynamics as dyn

    a = adapters(model)
    _need(a, analysis)
    if n is not None and (not isinstance(n, int) or n < 2):
        raise ValueError(f"n={n!r}: give an integer >= 2")
    n = n or (a.transfer_n if analysis == "transfer" else a.default_n)
    batch = a.inputs(model, n, seed)
    kw = splat(model, a, batch)
    if analysis == "lens":
        res = dyn.iteration_lens(model, batch.inputs, target=batch.target, layer_hooks=a.layer_hooks, **kw,
                                 **options)
    elif analysis == "convergence":
        res = dyn.convergence(model, batch.inputs, difficulty=batch.difficulty, **kw, **options)
    elif analysis == "basin":
        T = len(dyn.state_names(model, a.state_hooks))
        T = min(T, _fired_steps(model, a, batch))
        options.setdefault("steps", _spaced(T, options.pop("max_steps", a.max_basin_steps)))
        options.setdefault("samples", 2)
        res = dyn.basin(model, batch.inputs, seed=seed, **kw, **options)
    elif analysis == "transfer":
        states = _rollout(model, a, batch)  # [T, B, ...]
        if batch.position is not None:
            states = states[:, torch.arange(states.shape[1]), batch.position]
        keep = _spaced(states.shape[0], options.pop("max_steps", a.max_probe_steps))
        acts = {t: states[t].reshape(states.shape[1], -1).double().numpy() for t in keep}
        res = dyn.probe_transfer(acts, batch.probe, seed=seed, **options)
    else:  # fixed-points
        F, dim = a.step_fn(model, batch)
        states = _rollout(model, a, batch)
        starts = states.reshape(-1, states.shape[-1])
        pick = torch.randperm(len(starts), generator=torch.Generator().manual_seed(seed))[: options.pop("n_starts", 32)]
        res = dyn.fixed_points(F, starts=starts[pick].clone(), seed=seed, **options)
    res.meta.update(model_family=a.family, analysis=analysis, n=n, seed=seed,
                    probe_target=batch.probe_name if analysis == "transfer" else None)
    return res


def _fired_steps(model, a: Adapters, batch: Batch) -> int:
    return int(_rollout(model, a, batch).shape[0])


def describe() -> Mapping[str, dict]:
    """family -> {"analyses": (...), "state_hooks": ..., "notes": ...} (for pages and help texts)."""
    return {name: {"analyses": a.analyses, "state_hooks": a.state_hooks, "notes": a.notes}
            for name, a in ADAPTERS.items()}

