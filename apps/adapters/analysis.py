"""The analyses (patching, attribution, probing, codebooks) for the explorer's analysis pages.

Per model family the inputs, metrics and probe targets come from ``probes`` (as for the
``workbench ... analysis`` commands); this module adds the choices a page offers and turns
text fields (site patterns, positions, heads) into ``Sites``, with clear errors.

>>> s = setup(model, "reasoner", n=1, seed=0, metric="logit difference")
>>> res = run_patching(model, s, sites("steps.*.bottleneck.hook_codes", "each", "none"))
>>> res.df, res.figure()
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

import probes
from workbench.attribution import attribute
from workbench.patching import ABLATIONS, patch
from workbench.results import Result
from workbench.sites import Sites
from workbench.tasks import graph_arith as ga

METRICS = {
    "reasoner": ("logit difference", "clean answer probability"),
    "act": ("signed output logit", "clean answer probability"),
    "warp": ("minus one-step MSE",),
}
# (site patterns, positions) that render fast by default: the reasoner's codes are integers, so
# most code patches are no-ops (clean == corrupted) and cost nothing
DEFAULT_SITES = {
    "reasoner": ("steps.*.bottleneck.hook_codes", "each"),
    "act": ("time.*.ponder.*.hook_state", "none"),
    "warp": ("time.*.hook_theta", "none"),
}
DEFAULT_N = {"reasoner": 1, "act": 8, "warp": 4}
N_RANGE = {"reasoner": (1, 16), "act": (1, 256), "warp": (1, 64)}
METHODS = ("exact patching", "attribution patching")
PROBE_TARGETS = {"reasoner": ("value", "computed", "depth"), "act": ("parity", "halts")}
PROBE_N = {"reasoner": (8, 2000), "act": (20, 5000), "warp": (20, 2000)}
CODEBOOK_N = {"reasoner": (1, 512), "act": (10, 5000), "warp": (10, 2000)}


def check_family(family: str) -> str:
    if family not in METRICS:
        raise ValueError(f"the analyses cover the families {', '.join(METRICS)}; got {family!r}")
    return family


def check_n(n: int, bounds: tuple[int, int], what: str = "n") -> int:
    lo, hi = bounds
    if not lo <= int(n) <= hi:
        raise ValueError(f"{what}={n} is out of range; allowed {lo}..{hi}")
    return int(n)


# ------------------------------------------------------------------- inputs
@dataclass
class Setup:
    """Inputs and metric of a patching experiment (any family)."""

    clean: torch.Tensor
    corrupted: torch.Tensor
    metric: Callable
    forward_kwargs: dict
    description: str
    time_steps: int | None = None  # WARP: the sequence length (for the default stride over time)


def setup(model, family: str, n: int, seed: int, metric: str, n_nodes: int | None = None) -> Setup:
    """The family's standard clean / corrupted inputs and the chosen metric."""
    check_family(family)
    n = check_n(n, N_RANGE[family])
    if metric not in METRICS[family]:
        raise ValueError(f"metric {metric!r}; allowed for {family}: {METRICS[family]}")
    if family == "reasoner":
        from probes.reasoner import patching_setup

        if n_nodes is not None and not 2 <= int(n_nodes) <= model.cfg.name_pool:
            raise ValueError(f"number of nodes {n_nodes} is out of range; allowed 2..{model.cfg.name_pool}")
        s = patching_setup(model, n=n, n_nodes=n_nodes, seed=int(seed))
        fn = s.metric
        if metric == "clean answer probability":
            rows, pos = torch.arange(n), s.target_pos
            good = torch.tensor([int(ga.encode(p, model.cfg.scheme, model.cfg.name_pool).answer[q])
                                 for p, q in zip(s.problems, pos.tolist())])

            def fn(out):  # noqa: F811 - the chosen metric replaces the default
                return out.value_logits[:, -1][rows, pos].softmax(-1)[rows, good]
        desc = s.description if metric == METRICS[family][0] else f"{s.description}; the metric replaced by: {metric}"
        return Setup(s.clean, s.corrupted, fn, s.forward_kwargs, desc)
    from probes import act, warp

    s = (act if family == "act" else warp).patching_setup(model, n=n, seed=int(seed))
    fn = s.metric
    if metric == "clean answer probability":
        def fn(out):  # noqa: F811
            return torch.sigmoid(s.metric(out))
    desc = s.description if metric == METRICS[family][0] else f"{s.description}; the metric replaced by: {metric}"
    return Setup(s.clean, s.corrupted, fn, s.forward_kwargs, desc,
                 time_steps=s.clean.shape[1] if family == "warp" else None)


# -------------------------------------------------------------------- sites
def parse_axis(text: str, name: str):
    """'each', 'none' (or empty) or comma-separated non-negative integers -> a Sites axis."""
    text = (text or "").strip()
    if text in ("", "none"):
        return None
    if text == "each":
        return "each"
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{name}={text!r}: expected 'each', 'none' or comma-separated integers like '0,3'") from None
    if not values or min(values) < 0:
        raise ValueError(f"{name}={text!r}: expected 'each', 'none' or non-negative integers like '0,3'")
    return values


def sites(patterns: str, positions: str = "none", heads: str = "none", time_stride: int | None = None,
          time_steps: int | None = None) -> Sites:
    """Sites from a text field of hook names or globs (separated by spaces, commas or newlines).

    ``time_stride`` keeps every k-th time step of ``time.{t}`` hooks (WARP's long sequences).
    """
    names = [p for p in patterns.replace(",", " ").split() if p]
    if not names:
        raise ValueError("no sites: enter hook names or glob patterns such as 'steps.*.blocks.*.hook_resid_pre'")
    loops = {}
    if time_stride:
        if int(time_stride) < 1:
            raise ValueError(f"time stride {time_stride} must be >= 1")
        loops["time"] = range(0, time_steps or 10**6, int(time_stride))
    return Sites(names, positions=parse_axis(positions, "positions"), heads=parse_axis(heads, "heads"), **loops)


def run_patching(model, s: Setup, selection: Sites, method: str = "exact patching", ablation: str | None = None,
                 memory_mb: float = 256) -> Result:
    """Exact activation patching or attribution patching of every selected site."""
    if method not in METHODS:
        raise ValueError(f"method {method!r}; allowed: {METHODS}")
    if ablation not in ABLATIONS:
        raise ValueError(f"ablation {ablation!r}; allowed: {ABLATIONS}")
    if method == "exact patching":
        return patch(model, s.clean, s.corrupted, s.metric, selection, ablation=ablation,
                     forward_kwargs=s.forward_kwargs, memory_mb=memory_mb)
    return attribute(model, s.clean, s.corrupted, s.metric, selection, ablation=ablation,
                     forward_kwargs=s.forward_kwargs)


# ------------------------------------------------------------------ probing
def probe_targets(model, family: str) -> tuple[str, ...]:
    """The targets a family's probes can read."""
    if family == "warp":
        from apps.adapters.warp import task_of
        from workbench.tasks.dynamics import DynamicsConfig

        task = task_of(model)
        if not isinstance(task, DynamicsConfig):
            raise ValueError("the WARP probes read physical parameters: they need a model of a dynamical system")
        return tuple(task.spec.param_names)
    return PROBE_TARGETS[check_family(family)]


def collect(model, family: str, n: int, seed: int, patterns: str = "steps.*.blocks.*.hook_resid_post",
            n_nodes: int | None = None, per_problem: int = 3, stride: int = 8) -> probes.Activations:
    """Activations for probing: the reasoner's defining positions at the chosen hooks; ACT's
    ponder states; WARP's theta_t every ``stride`` steps."""
    n = check_n(n, PROBE_N[check_family(family)])
    if family == "act":
        from probes.act import collect_states

        return collect_states(model, n, seed=int(seed))
    if family == "warp":
        from probes.warp import collect_thetas

        if int(stride) < 1:
            raise ValueError(f"stride={stride} must be >= 1")
        return collect_thetas(model, n, seed=int(seed), stride=int(stride))
    from probes import reasoner as pr

    names = [p for p in patterns.replace(",", " ").split() if p]
    if not names:
        raise ValueError("no sites: enter hook names or glob patterns such as 'steps.*.blocks.*.hook_resid_post'")
    problems = ga.sample(pr.task_of(model, n_nodes=n_nodes), n, np.random.default_rng(int(seed)))
    steps = min(model.cfg.steps_for_depth(max(p.depth for p in problems)), model.cfg.max_steps)
    return pr.collect(model, problems, Sites(names), per_problem=per_problem, steps=steps, seed=int(seed))


def fit_probe(model, family: str, acts: probes.Activations, target: str, control_types: str = "none",
              seed: int = 0) -> Result:
    """One probe per site for ``target`` with a control task (selectivity = score - control)."""
    allowed = probe_targets(model, family)
    if target not in allowed:
        raise ValueError(f"target {target!r}; allowed for {family}: {allowed}")
    if control_types not in ("none", "variable"):
        raise ValueError(f"control types {control_types!r}; allowed: 'none', 'variable'")
    kwargs: dict = {"target_name": target, "seed": int(seed)}
    y = target
    if family == "reasoner":
        from probes.reasoner import computed

        y = computed(acts.rows) if target == "computed" else target
        kwargs.update(groups="problem", types=None if control_types == "none" else "variable")
    elif family == "act" and target == "halts":
        from probes.act import halts

        y = halts(acts.rows)
        kwargs["sites"] = "time.*.ponder.*"
    return probes.fit(acts, y, **kwargs)


# ----------------------------------------------------------------- codebook
def codebook(model, family: str, n: int, seed: int, k: int = 8, n_nodes: int | None = None) -> Result:
    """The codebook report: the reasoner's value codes, or a k-means codebook over ACT / WARP states."""
    n = check_n(n, CODEBOOK_N[check_family(family)])
    if family == "reasoner":
        from probes.reasoner import codebook_report, task_of

        problems = ga.sample(task_of(model, n_nodes=n_nodes), n, np.random.default_rng(int(seed)))
        return codebook_report(model, problems, seed=int(seed))
    if not 2 <= int(k) <= 256:
        raise ValueError(f"k={k} clusters is out of range; allowed 2..256")
    from probes import act, warp

    return (act if family == "act" else warp).codebook_report(model, n=n, k=int(k), seed=int(seed))
