"""The loop-dynamics lab (``workbench.dynamics``) on the zoo: one set of adapters per family.

``models.registry`` names, for every family with a loop, its ``Dynamics`` entry (torch-free:
which analyses apply and where the adapters live); this module holds the adapters themselves
(they need torch and the model) and ``run``, which draws the family's own inputs and runs one
analysis::

    >>> from models import dynamics_adapters as da
    >>> model = models.load("reasoner")
    >>> a = da.adapters(model)       # Adapters: state_hooks, readout(model, batch), inputs(model, n, seed), ...
    >>> res = da.run(model, "convergence", n=8, seed=0)
    >>> print(res.summary()); res.figure()
    >>> quick = da.run(model, "basin", **da.page_defaults(a, "basin"))   # the Dynamics page's small defaults

Analyses (``ANALYSES`` in ``models.registry``): ``lens`` (``iteration_lens``), ``convergence``,
``transfer`` (``probe_transfer`` on ``rollout_states``), ``basin`` and ``fixed-points``
(``fixed_points`` of the family's cell at the input of the first example, started from visited
states). Which apply to a family: ``analyses_of(name)`` (``Adapters.analyses``: lens and basin need a
readout, fixed points a cell that maps each row on its own). Every family of the zoo has a readout:
the reasoner's value head, ACT's output logit, the gain circuit's peak neuron, WARP's root network
decoded from theta_t at the last step's query (a forecast, or a classifier's logits), the GRU's
forecast of the next value.
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

__all__ = ["ANALYSES", "ADAPTERS", "PAGE", "Adapters", "Batch", "adapters", "analyses_of", "family_adapters",
           "page_defaults", "run",
           "splat"]


@dataclass
class Batch:
    """One draw of a family's inputs, with what the analyses compare against.

    ``target``: true answers for the lens: [batch] or [batch, pos] integers, [batch, d] values (a
    forecast), or a function ``t -> answers`` when every step has its own (a one-step forecaster); ``difficulty``:
    [batch] for convergence (the reasoner: the problem's depth); ``mask``: [batch, pos] bool, the answers that count;
    ``probe``: the probe target of ``transfer`` ([batch]; floats: regression) with ``probe_name``;
    ``position``: [batch] long, the one answer position per example ``transfer`` reads (models
    with positions), else None.
    """

    inputs: Any
    target: Optional[Tensor | Callable[[int], Tensor]] = None
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
    ``inputs(model, n, seed) -> Batch``; ``readout(model, batch) -> (state -> answers)`` or None (no
    decoded answer: lens and basin do not apply); ``answers``: what the readout gives, "classes" (logits
    or integer predictions) or "values" (real-valued, e.g. a forecast), or a function ``model -> that``;
    ``commit``: convergence decodes the answer per step for the commit step (False when the readout of
    step t answers a different question at every step, as a one-step forecaster's); ``layer_hooks``: a template with
    ``{t}`` and ``{l}`` for the lens inside a step; ``step_fn(model, batch) -> (F, dim)``: the
    cell F(h) on [n, d] rows at the first example's input (None: fixed points do not apply, e.g.
    attention mixes the rows); ``max_probe_steps``: ``transfer`` reads at most this many steps
    (evenly spaced), ``max_basin_steps`` likewise for ``basin``. ``page``: the Dynamics page's
    defaults (small and quick) per analysis, over ``PAGE``: ``{"basin": {"n": 4, ...}}``.
    """

    family: str
    state_hooks: str
    inputs: Callable[[Any, int, int], Batch]
    readout: Optional[Callable[[Any, Batch], Callable[[Tensor], Tensor]]] = None
    answers: str | Callable[[Any], str] = "classes"
    commit: bool = True
    layer_hooks: Optional[str] = None
    step_fn: Optional[Callable[[Any, Batch], tuple[Callable[[Tensor], Tensor], int]]] = None
    max_probe_steps: int = 16
    max_basin_steps: int = 8
    default_n: int = 16
    transfer_n: int = 256  # the default n of ``transfer`` (a probe needs more examples than the others)
    notes: str = ""
    page: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

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


def _reasoner_readout(model, batch: Batch):
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


def _act_readout(model, batch: Batch):
    return lambda s: model.readout(model.hidden_of(s))


def _act_step(model, batch: Batch):
    x = batch.inputs[0, 0]
    x0 = torch.cat([x, x.new_zeros(1)])[None]  # a later ponder step (first-step flag 0)

    def F(s: Tensor) -> Tensor:
        return model.cell_step(x0.to(s.dtype).expand(len(s), -1), s)

    return F, model.cfg.state_size


# ------------------------------------------------------------------- WARP, GRU
def _classifies(model) -> bool:
    """A WARP model trained to label whole sequences (digits): its answer is the class at the last step."""
    return bool(getattr(model.cfg, "n_classes", 0))


def _sequences(model, n: int, seed: int) -> tuple[Tensor, Optional[Tensor], np.ndarray, str]:
    """(x [n, L, d_in], labels [n] or None, probe target [n], its name) of the model's sequence task."""
    from workbench.tasks import digits as dg
    from workbench.tasks import dynamics as dy

    task = registry.task_of(model)
    if isinstance(task, dy.DynamicsConfig):
        trajs = dy.sample(task, n, np.random.default_rng(seed))
        name = sorted(trajs[0].params)[0]
        return (torch.from_numpy(dy.stack(trajs)).float(), None,
                np.array([t.params[name] for t in trajs], dtype=float), f"physical parameter {name}")
    if isinstance(task, dg.DigitsConfig):
        digits = dg.sample(task, n, seed)
        labels = np.array([d.label for d in digits])
        x = torch.from_numpy(dg.sequences(np.array([d.pixels for d in digits])))
        return x, torch.from_numpy(labels), labels, "digit"
    raise ValueError(f"the dynamics adapters of {type(model).__name__} cover the dynamical-system and digits tasks; "
                     f"this model was trained on {type(task).__name__}")


def _warp_inputs(model, n: int, seed: int) -> Batch:
    """A classifier reads the whole sequence and is scored on its label; a forecaster reads all but
    the last value and is scored on it (the forecast that the state after the last step makes)."""
    x, labels, probe, probe_name = _sequences(model, n, seed)
    if _classifies(model):
        if labels is None:
            raise ValueError("this WARP model classifies sequences, but its task has no labels")
        return Batch(x, target=labels, probe=probe, probe_name=probe_name, forward_kwargs={"mode": "recurrent"})
    return Batch(x[:, :-1], target=x[:, -1], probe=probe, probe_name=probe_name,
                 forward_kwargs={"mode": "recurrent"})


def _gru_inputs(model, n: int, seed: int) -> Batch:
    """The GRU forecasts one step ahead: the answer of step t is x_{t+1} (the last value is only a target)."""
    x, _, probe, probe_name = _sequences(model, n, seed)
    return Batch(x[:, :-1], target=lambda t: x[:, t + 1], probe=probe, probe_name=probe_name)


def _warp_readout(model, batch: Batch):
    """theta_t -> the root network with weights theta_t read at the last step's query (tau_{T-1}, u_{T-1}):
    the forecast of the value after the sequence (or the class logits), as if the weights stopped at t.
    Rows beyond the batch (perturbed copies) repeat its queries."""
    x = batch.inputs
    t_last, u, B = x.shape[1] - 1, x[:, -1], x.shape[0]
    key = "logits" if _classifies(model) else "mean"

    def read(theta: Tensor) -> Tensor:  # [R, D] -> [R, d_in] or [R, classes], R a multiple of B
        if theta.shape[0] % B:
            raise ValueError(f"the WARP readout reads a multiple of the batch ({B}) of states; got {theta.shape[0]}")
        return model.decode_theta(theta, t_last, u.repeat(theta.shape[0] // B, 1))[key]

    return read


def _warp_answers(model) -> str:
    return "classes" if _classifies(model) else "values"


def _gru_readout(model, batch: Batch):
    return model.readout  # h_t -> the forecast of x_{t+1}


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


def _gain_readout(model, batch: Batch):
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
                         transfer_n=64, page={"lens": {"n": 4}, "convergence": {"n": 4},
                                              "transfer": {"n": 12, "positions": "all"}, "basin": {"n": 2}},
                         notes="state: the residual after each step; readout: the value head; no fixed points "
                               "(attention mixes positions)"),
    "act": Adapters("act", "time.0.ponder.{t}.hook_state", _act_inputs, readout=_act_readout, step_fn=_act_step,
                    default_n=64, notes="state: the cell state after each ponder step; readout: the output logit"),
    "warp": Adapters("warp", "time.{t}.hook_theta", _warp_inputs, readout=_warp_readout, answers=_warp_answers,
                     step_fn=_warp_step, default_n=16,
                     notes="state: theta_t (recurrent mode); readout: the root network of theta_t read at the last "
                           "step's query (the forecast after the sequence, or a classifier's logits); fixed points "
                           "of theta -> theta A^T"),
    "gru": Adapters("gru", "time.{t}.hook_hidden", _gru_inputs, readout=_gru_readout, answers="values", commit=False,
                    step_fn=_gru_step, default_n=16,
                    notes="state: the hidden state; readout: the forecast of the next value (each step its own, so "
                          "no commit step); fixed points of the cell at a constant input"),
    "gain": Adapters("gain", "time.{t}.hook_rates", _gain_inputs, readout=_gain_readout, step_fn=_gain_step,
                     default_n=16, notes="state: the rates after each Euler step; readout: the peak neuron"),
}
# what ``models.registry`` names ("models.dynamics_adapters:REASONER", ...)
REASONER, ACT, WARP, GRU, GAIN = (ADAPTERS[k] for k in ("reasoner", "act", "warp", "gru", "gain"))


# ------------------------------------------------------------------------ API
# the Dynamics page's defaults: a small draw, few steps and sizes, all perturbations of the grid in one
# forward; each family's ``page`` overrides them. The Python API and the command keep full control.
PAGE: dict[str, dict[str, Any]] = {
    "lens": {"n": 8},
    "convergence": {"n": 8},
    "transfer": {"n": 64, "max_steps": 6, "probe": "ridge"},
    "basin": {"n": 4, "eps": (0.1, 1.0), "max_steps": 3, "samples": 1},
    "fixed-points": {"n": 8, "n_starts": 8, "max_iter": 40},
}


def adapters(model) -> Adapters:
    """The adapters of a model's family (``ValueError`` when the family has no loop adapters)."""
    family = registry.family_of(model)
    if family.dynamics is None:
        covered = ", ".join(n for n, f in registry.families().items() if f.dynamics is not None)
        raise ValueError(f"the dynamics lab does not cover the {family.label} family (covered: {covered})")
    found = registry._resolve(family.dynamics.adapters)
    return found(model) if callable(found) and not isinstance(found, Adapters) else found


def family_adapters(family: str) -> Optional[Adapters]:
    """The adapters of a family by name, before any model is loaded; None when the family has none
    or builds them from the model (a function ``model -> Adapters``)."""
    fam = registry.get(family)
    if fam.dynamics is None:
        return None
    found = registry._resolve(fam.dynamics.adapters)
    return found if isinstance(found, Adapters) else None


def analyses_of(family: str) -> tuple[str, ...]:
    """The analyses that apply to a family (by name), from its adapters; () when it has none."""
    a = family_adapters(family)
    if a is not None:
        return a.analyses
    fam = registry.get(family)
    return tuple(fam.dynamics.analyses) if fam.dynamics is not None else ()


def page_defaults(a: Adapters, analysis: str) -> dict[str, Any]:
    """The Dynamics page's ``run`` arguments for one analysis: ``{"n": ..., **options}``."""
    _need(a, analysis)
    return {**PAGE[analysis], **a.page.get(analysis, {})}


def answers_of(model, a: Adapters) -> str:
    """What the family's readout gives for this model: "classes" or "values"."""
    return a.answers(model) if callable(a.answers) else a.answers


def splat(model, a: Adapters, batch: Batch, analysis: str = "lens") -> dict:
    """The keyword arguments shared by ``iteration_lens`` / ``convergence`` / ``basin``."""
    out = {"state_hooks": a.state_hooks, "forward_kwargs": dict(batch.forward_kwargs)}
    if a.readout is not None and (analysis != "convergence" or a.commit):
        out["readout"] = a.readout(model, batch)
        out["answers"] = answers_of(model, a)
    if batch.mask is not None:
        out["mask"] = batch.mask
    return out


def _spaced(T: int, k: int) -> list[int]:
    from workbench.dynamics import spaced_steps

    try:
        return spaced_steps(T, k)
    except ValueError:
        raise ValueError(f"max_steps={k!r} must be an integer >= 1") from None


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
    family's ``default_n``, ``transfer_n`` for ``transfer``); ``options`` go to the analysis function
    (e.g. ``eps=[0.1]``, ``steps=[0, 4]``, ``samples=1`` for basin), plus ``max_steps`` (transfer,
    basin: read at most this many evenly spaced steps) and ``n_starts`` (fixed points). The page's
    quick defaults: ``run(model, analysis, **page_defaults(adapters(model), analysis))``.
    The result's ``meta`` gains ``model_family``, ``analysis``, ``n``, ``seed`` and ``probe_target``.
    """
    from workbench import dynamics as dyn

    a = adapters(model)
    _need(a, analysis)
    if n is not None and (not isinstance(n, int) or n < 2):
        raise ValueError(f"n={n!r}: give an integer >= 2")
    n = n or (a.transfer_n if analysis == "transfer" else a.default_n)
    batch = a.inputs(model, n, seed)
    kw = splat(model, a, batch, analysis)
    if analysis == "lens":
        res = dyn.iteration_lens(model, batch.inputs, target=batch.target, layer_hooks=a.layer_hooks, **kw,
                                 **options)
    elif analysis == "convergence":
        res = dyn.convergence(model, batch.inputs, difficulty=batch.difficulty, **kw, **options)
    elif analysis == "basin":
        k = options.pop("max_steps", a.max_basin_steps)
        _spaced(2, k)  # checks it
        options.setdefault("steps", k)  # k evenly spaced steps of those that fire
        options.setdefault("samples", 2)
        res = dyn.basin(model, batch.inputs, seed=seed, **kw, **options)
    elif analysis == "transfer":
        states = _rollout(model, a, batch)  # [T, B, ...]
        probe, groups, positions = batch.probe, None, options.pop("positions", "deepest")
        if positions not in ("deepest", "all"):
            raise ValueError(f"positions={positions!r}; allowed: 'deepest' (one answer per example) or 'all' "
                             "(every answer position, split by example)")
        if batch.position is not None and positions == "all":
            rows, cols = batch.mask.nonzero(as_tuple=True)
            states, probe, groups = states[:, rows, cols], batch.target[rows, cols].numpy(), rows.numpy()
            batch.probe_name = "value at every answer position"
        elif batch.position is not None:
            states = states[:, torch.arange(states.shape[1]), batch.position]
        elif positions == "all":
            raise ValueError(f"positions='all' needs answer positions; the {a.family} family has one answer "
                             "per example (allowed: 'deepest')")
        keep = _spaced(states.shape[0], options.pop("max_steps", a.max_probe_steps))
        acts = {t: states[t].reshape(states.shape[1], -1).double().numpy() for t in keep}
        res = dyn.probe_transfer(acts, probe, seed=seed, groups=groups, **options)
    else:  # fixed-points
        F, dim = a.step_fn(model, batch)
        states = _rollout(model, a, batch)
        starts = states.reshape(-1, states.shape[-1])
        pick = torch.randperm(len(starts), generator=torch.Generator().manual_seed(seed))[: options.pop("n_starts", 32)]
        res = dyn.fixed_points(F, starts=starts[pick].clone(), seed=seed, **options)
    res.meta.update(model_family=a.family, analysis=analysis, n=n, seed=seed,
                    probe_target=batch.probe_name if analysis == "transfer" else None)
    return res


def describe() -> Mapping[str, dict]:
    """family -> {"analyses": (...), "state_hooks": ..., "notes": ...} (for pages and help texts)."""
    return {name: {"analyses": a.analyses, "state_hooks": a.state_hooks, "notes": a.notes}
            for name, a in ADAPTERS.items()}
