"""The analyses (patching, attribution, probing, codebooks) for the explorer's analysis pages.

Per model family the inputs, metrics, options and probe targets come from its study in
``probes`` (``probes.study.Study``, found through the model registry), as for the ``workbench
patch|attribute|probe|codebook`` commands; this module checks the sizes a page allows and turns
text fields (site patterns, positions, heads) into ``Sites``, with clear errors. Nothing here
depends on which family a model belongs to.

>>> s = setup(model, "reasoner", n=1, seed=0, metric="logit difference")
>>> res = run_patching(model, s, sites("steps.*.bottleneck.hook_codes", "each", "none", loops=s.loops))
>>> res.df, res.figure()
"""

from __future__ import annotations

import probes
from probes import study as studies
from workbench.attribution import attribute
from workbench.patching import ABLATIONS, patch
from workbench.results import Result
from workbench.sites import Sites

METHODS = ("exact patching", "attribution patching")


def study(family: str) -> studies.Study:
    """The study of ``family``; ``ValueError`` names the families the analyses cover."""
    from models import registry

    covered = registry.names(analysed=True)
    if family not in covered:
        raise ValueError(f"the analyses cover the families {', '.join(covered)}; got {family!r}")
    return studies.need(family)


def check_family(family: str) -> str:
    study(family)
    return family


def check(model, family: str) -> studies.Study:
    """The family's study, after checking that it covers this model (``ValueError`` says why not)."""
    s = study(family)
    s.check(model)
    return s


def check_n(n: int, bounds: tuple[int, int], what: str = "n") -> int:
    lo, hi = bounds
    if not lo <= int(n) <= hi:
        raise ValueError(f"{what}={n} is out of range; allowed {lo}..{hi}")
    return int(n)


def _n(s: studies.Study, analysis: str, n: int) -> int:
    return check_n(n, s.size(analysis)[1:])


# ------------------------------------------------------------------- inputs
def setup(model, family: str, n: int, seed: int, metric: str, **options) -> studies.Experiment:
    """The family's standard clean / corrupted inputs and the chosen metric (``options``: the study's)."""
    s = study(family)
    return s.patching(model, _n(s, "patch", n), int(seed), metric=metric, **options)


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
          time_steps: int | None = None, loops: dict | None = None) -> Sites:
    """Sites from a text field of hook names or globs (separated by spaces, commas or newlines).

    ``loops`` restricts loop axes (an experiment's ``loops``); ``time_stride`` keeps every k-th
    time step of ``time.{t}`` hooks (of ``time_steps``).
    """
    names = [p for p in patterns.replace(",", " ").split() if p]
    if not names:
        raise ValueError("no sites: enter hook names or glob patterns such as 'steps.*.blocks.*.hook_resid_pre'")
    loops = dict(loops or {})
    if time_stride:
        if int(time_stride) < 1:
            raise ValueError(f"time stride {time_stride} must be >= 1")
        loops["time"] = range(0, time_steps or 10**6, int(time_stride))
    return Sites(names, positions=parse_axis(positions, "positions"), heads=parse_axis(heads, "heads"), **loops)


def run_patching(model, s: studies.Experiment, selection: Sites, method: str = "exact patching",
                 ablation: str | None = None, memory_mb: float = 256) -> Result:
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
    """The targets a family's probes can read on this model."""
    return tuple(check(model, family).targets(model))


def collect(model, family: str, n: int, seed: int, sites: str | None = None, **options) -> probes.Activations:
    """Activations for probing, as the family's study collects them (``sites``: its hook patterns,
    for a study that takes them)."""
    s = study(family)
    n = _n(s, "probe", n)
    if sites is not None:
        options["sites"] = sites
    s.check(model)
    return s.collect(model, n, int(seed), **s.checked(model, "probe", options))


def fit_probe(model, family: str, acts: probes.Activations, target: str, control_types: str = "none",
              seed: int = 0) -> Result:
    """One probe per site for ``target`` with a control task (selectivity = score - control)."""
    return study(family).fit(model, acts, target, control_types, seed=int(seed))


# ----------------------------------------------------------------- codebook
def codebook(model, family: str, n: int, seed: int, **options) -> Result:
    """The family's codebook report (the reasoner's value codes; a k-means codebook of ACT / WARP states)."""
    s = study(family)
    n = _n(s, "codebook", n)
    s.check(model)
    return s.codebook(model, n, int(seed), **s.checked(model, "codebook", options))
