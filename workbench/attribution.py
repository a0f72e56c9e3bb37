"""Attribution patching: a first-order estimate of activation patching at every site at once.

For a site with activation a, patching clean into corrupted changes the metric by about

    (a_clean - a_corrupted) . dM/da  (gradient taken on the corrupted run)

so one clean forward, one corrupted forward and one backward pass estimate every site
(Nanda, "Attribution patching", 2023). ``attribute`` takes the same arguments and returns
the same ``Result`` as ``workbench.patching.patch``, so the two sit side by side::

    >>> exact = patch(model, clean, corrupted, metric, sites=grid, forward_kwargs=kw)
    >>> approx = attribute(model, clean, corrupted, metric, sites=grid, forward_kwargs=kw)
    >>> np.corrcoef(exact.df.score, approx.df.score)

Where the estimate means something (and where it does not):

* It is exact when the metric is linear in the patched activation, and good when the
  patch is small compared with the curvature of the metric.
* **Integer activations** (the reasoner's ``bottleneck.hook_codes``) have no gradient:
  their rows are NaN with ``note = "integer activation"``.
* **Behind a hard argmax** (the reasoner with ``latent="discrete"``) no gradient flows from
  one step to the next: an activation at step t only reaches the metric through step t's
  own logits. If the metric reads a later step, the gradient at step t is not connected
  (its gradient is missing or exactly zero over the whole hook) and the row is NaN with
  ``note = "no gradient path"``. Read discrete models
  within a step (a metric on step t's output, e.g. ``value_logits[:, t]``), or use exact
  patching across steps. Models whose loop is continuous (``latent="continuous"``, ACT,
  WARP) carry gradients through the loop, and every step gets an estimate.

Rows that hold no estimate say so: ``status`` (and ``note``, "" when estimated) names the
reason, ``res.counts()`` tallies them, ``res.summary()`` names them, ``res.top(k)`` never ranks
them, and ``res.figure()`` draws them as grey cells labelled with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from workbench.results import OK, Result, effect
from workbench.runs import (Baselines, Metric, ablation_source, base_run, check_metric, frame, metric_values, setup,
                           unreached)
from workbench.sites import SiteSelection, resolve

__all__ = ["attribute"]


def attribute(model, clean, corrupted, metric: Metric, sites: SiteSelection, *, ablation: str | None = None,
              forward_kwargs: Mapping[str, Any] | None = None) -> Result:
    """Attribution patching: gradient x activation difference for every site.

    Same arguments as ``patch``. ``ablation`` picks the same source as there ("zero",
    "mean" over the corrupted batch, "resample"); the gradient is then taken on the clean
    run, into which the ablation would be written.

    Returns:
        ``Result`` with one row per site: ``estimate`` (estimated metric change),
        ``score`` (normalised like ``patch``: the estimated patched score), ``effect``
        (as ``patch``'s: ``score`` without ablation, ``1 - score`` with one), ``status``
        (``"ok"``, or why the row is NaN: ``"no gradient path"``, ``"integer activation"``)
        and ``note`` (the same reason, "" when estimated).
    """
    run = setup(model, clean, corrupted, sites, ablation, forward_kwargs)
    B, want = run.batch, run.want
    other = base_run(model, run.other, run.forward_kwargs, want)

    # The base run with gradients: every selected activation becomes a node we can differentiate.
    acts: dict[str, Tensor] = {}

    def grab(act: Tensor, hook):
        if not torch.is_tensor(act) or not act.is_floating_point():
            acts[hook.name] = act
            return None
        if not act.requires_grad:  # e.g. computed from inputs only: make it a leaf of the graph
            act = act.detach().requires_grad_()
        acts[hook.name] = act
        return act

    shapes: dict[str, tuple] = {}

    def shape(act, hook):
        if torch.is_tensor(act):
            shapes[hook.name] = tuple(act.shape)

    with torch.enable_grad():
        out_base = model.run_with_hooks(*run.base, fwd_hooks=[(want, grab), (lambda n: True, shape)],
                                        **run.forward_kwargs)
        m_base_t = check_metric(metric(out_base), B, "base")
        m_base = m_base_t.detach().float().cpu()
        # the sites are the hooks the clean run reaches, as in patch (the same rows side by side)
        site_list = resolve(run.sites, other.shapes if ablation is None else shapes, model)
        names = sorted({s.name for s in site_list})
        # a hook the base run alone never reaches (ACT's ponder steps): patching it changes nothing
        never = unreached(model, out_base, (n for n in names if n not in acts))
        for n in names:
            if n not in acts and n not in never:
                raise ValueError(f"hook {n!r} fired in the clean run but not in the corrupted one; "
                                 "fix the number of steps with forward_kwargs")
        names = [n for n in names if n not in never]
        diff_names = [n for n in names if acts[n].is_floating_point() and acts[n].requires_grad]
        if not m_base_t.requires_grad:  # e.g. a metric on integer codes: nothing to differentiate
            diff_names = []
        grads = (torch.autograd.grad(m_base_t.float().mean(), [acts[n] for n in diff_names], allow_unused=True)
                 if diff_names else [])
    grad = dict(zip(diff_names, grads))
    m_other = metric_values(metric, other.output, B, "other")
    m_clean, m_corr = (m_other, m_base) if ablation is None else (m_base, m_other)
    baselines = Baselines(float(m_clean.mean()), float(m_corr.mean()))
    M_base = baselines.base(ablation)

    products: dict[str, Tensor | str] = {}  # per reached site: the products, or why there is no estimate
    for n in names:
        a = acts[n].detach()
        if not a.is_floating_point():
            products[n] = "integer activation"
        elif grad.get(n) is None or not bool(grad[n].any()):  # unused, or only zeros from e.g. a stack
            products[n] = "no gradient path"
        elif ablation in ("mean", "resample") and n not in other.cache:
            raise ValueError(f"hook {n!r} fired in the clean run but not in the corrupted one, the source of a "
                             f"{ablation} ablation; fix the number of steps with forward_kwargs")
        else:
            src = ablation_source(ablation, n, other.cache, other.cache, a)  # the other run is the source
            if src.shape != a.shape:
                raise ValueError(f"{n}: clean and corrupted activations have different shapes "
                                 f"{list(src.shape)} vs {list(a.shape)}")
            products[n] = (src.to(a.dtype) - a) * grad[n]

    rows = []
    for s in site_list:
        p = products.get(s.name, 0.0)  # 0.0: never reached by the base run, so exactly no change
        if isinstance(p, float):
            est, note = p, ""
        elif isinstance(p, str):
            est, note = float("nan"), p
        else:
            est, note = float(p[s.index(p.shape)].sum()), ""
        score = baselines.score(M_base + est)
        rows.append({**s.row(), "estimate": est, "score": score, "effect": effect(score, ablation),
                     "status": note or OK, "note": note})
    df = frame(rows)
    meta = {**baselines.meta(ablation, B), "sites": len(site_list), "sites_estimated": int((df["status"] == OK).sum()),
            "seconds": run.seconds()}
    return Result("attribute", df, "score", meta)
