"""The reference every patching result is checked against, and the checks.

``reference_patch`` is activation patching as TransformerLens's ``generic_activation_patch``
does it: two cached runs, then one ``run_with_hooks`` per site that writes the source value
into the base run, and the metric. It uses nothing of ``workbench.patching`` (no input,
base-run, metric, denominator or frame helper) and its own reading of the axis conventions,
so a bug there cannot hide in both. ``bench/patching.py`` times the same function.

Checked against it, tolerance 1e-5: ``patch`` on every family (the reasoner with its prefix
reuse and settled copies, including the discrete codes ``bottleneck.hook_codes``; ACT's
ponder steps; WARP's time steps), and ``attribute`` on a linear looped model, where
attribution patching is exact.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import models
from workbench.attribution import attribute
from workbench.hooks import HookedRecurrentModule, HookPoint, hook_list
from workbench.patching import patch
from workbench.sites import Site, Sites

ROOT = Path(__file__).resolve().parent.parent
TOL = 1e-5

pytestmark = pytest.mark.usefixtures("one_thread")


# -------------------------------------------------------------- the reference
def _axes(name: str, ndim: int) -> tuple[int | None, int | None]:
    """(position axis, head axis), TransformerLens's layouts, written out again here."""
    leaf = name.split(".")[-1]
    if ".attn." in f".{name}" and ndim == 4:
        if leaf in ("hook_pattern", "hook_attn_scores"):  # [batch, head, query, key]
            return 2, 1
        if leaf in ("hook_q", "hook_k", "hook_v", "hook_z", "hook_result"):  # [batch, pos, head, d_head]
            return 1, 2
    return (1 if ndim >= 3 else None), None


def _index(name: str, ndim: int, pos: int | None, head: int | None) -> tuple:
    idx: list = [slice(None)] * ndim
    pos_axis, head_axis = _axes(name, ndim)
    if pos is not None:
        idx[pos_axis] = pos
    if head is not None:
        idx[head_axis] = head
    return tuple(idx)


@torch.no_grad()
def reference_patch(model, clean, corrupted, metric, sites, *, ablation=None, sources=None, forward_kwargs=None):
    """One forward per site. Returns (metrics [sites], metric_clean, metric_corrupted), batch means.

    ``sites``: (hook name, pos or None, head or None) triples. ``ablation``: None (clean into the
    corrupted run), "resample" (corrupted into the clean run), "zero", "mean" (over the
    corrupted batch, into the clean run). ``sources``: {hook name: tensor} written instead.
    """
    fk = dict(forward_kwargs or {})
    c_args = tuple(clean) if isinstance(clean, (tuple, list)) else (clean,)
    r_args = tuple(corrupted) if isinstance(corrupted, (tuple, list)) else (corrupted,)
    names = sorted({name for name, _, _ in sites})
    out_c, cache_c = model.run_with_cache(*c_args, names_filter=names, **fk)
    out_r, cache_r = model.run_with_cache(*r_args, names_filter=names, **fk)
    m_clean, m_corr = float(metric(out_c).float().mean()), float(metric(out_r).float().mean())
    base = r_args if ablation is None else c_args
    values = []
    for name, pos, head in sites:
        if sources and name in sources:
            src = sources[name]
        elif ablation is None:
            src = cache_c[name]
        elif ablation == "resample":
            src = cache_r[name]
        elif ablation == "zero":
            src = torch.zeros_like(cache_c[name])
        else:
            src = cache_r[name].mean(0, keepdim=True).expand_as(cache_c[name])
        idx = _index(name, src.ndim, pos, head)

        def hook(act, hook, src=src, idx=idx):
            act = act.clone()
            act[idx] = src[idx].to(act.dtype)
            return act

        out = model.run_with_hooks(*base, fwd_hooks=[(name, hook)], **fk)
        values.append(float(metric(out).float().mean()))
    return np.array(values), m_clean, m_corr


def reference_scores(values: np.ndarray, m_clean: float, m_corr: float) -> np.ndarray:
    return (values - m_corr) / (m_clean - m_corr)


def triples(df) -> list[tuple[str, int | None, int | None]]:
    """The (hook, pos, head) of every row of a result table."""
    def value(row, col):
        v = row.get(col)
        return None if v is None or pd.isna(v) else int(v)

    return [(row["hook"], value(row, "pos"), value(row, "head")) for _, row in df.iterrows()]


def agree(result, model, clean, corrupted, metric, *, ablation=None, sources=None, forward_kwargs=None) -> float:
    """Check ``result`` (a ``patch`` or ``attribute`` result) against the reference; returns max |diff|."""
    values, m_clean, m_corr = reference_patch(model, clean, corrupted, metric, triples(result.df), ablation=ablation,
                                              sources=sources, forward_kwargs=forward_kwargs)
    assert result.meta["metric_clean"] == pytest.approx(m_clean, abs=TOL)
    assert result.meta["metric_corrupted"] == pytest.approx(m_corr, abs=TOL)
    ref = reference_scores(values, m_clean, m_corr)
    got = result.df["score"].to_numpy(dtype=float)
    if "metric" in result.df:
        np.testing.assert_allclose(result.df["metric"].to_numpy(dtype=float), values, atol=TOL, rtol=0)
    np.testing.assert_allclose(got, ref, atol=TOL, rtol=0)
    return float(np.abs(got - ref).max())


# ------------------------------------------------------------------ models
@pytest.fixture(scope="module")
def reasoner():
    from probes.reasoner import patching_setup

    model = models.load("reasoner")
    return model, patching_setup(model, n=1, n_nodes=6, seed=0)


class _LinearHooks(nn.Module):
    def __init__(self):
        super().__init__()
        self.hook_mixed, self.hook_state = HookPoint(), HookPoint()


class LinearLoop(HookedRecurrentModule):
    """s_{t+1} = M s_t A + x over [batch, pos, d]: the output is linear in every activation."""

    def __init__(self, pos: int = 4, d: int = 3, max_steps: int = 3):
        super().__init__()
        self.A = nn.Linear(d, d, bias=False)
        self.M = nn.Parameter(torch.randn(pos, pos) / pos)
        self.steps = hook_list(max_steps, _LinearHooks)
        self.setup()

    def forward(self, x: torch.Tensor, steps: int = 3) -> torch.Tensor:
        self.check_steps(steps)
        s = torch.zeros_like(x)
        for t in range(steps):
            mixed = self.steps[t].hook_mixed(torch.einsum("pq,bqd->bpd", self.M, self.A(s)))
            s = self.steps[t].hook_state(mixed + x)
        return s


# ------------------------------------------------------------------- checks
def test_patch_equals_the_reference_on_the_reasoner(reasoner):
    model, s = reasoner
    kw, L = s.forward_kwargs, s.clean.shape[1]
    for sites in (Sites("steps.*.blocks.*.hook_resid_pre", positions=sorted({int(s.leaf_pos[0]), *range(0, L, 6)})),
                  Sites("steps.*.blocks.0.attn.hook_z", heads="each", steps=[0, kw["steps"] - 1]),
                  Sites("steps.1.blocks.1.attn.hook_pattern", positions=[int(s.target_pos[0])], heads=[0, 2])):
        res = patch(model, s.clean, s.corrupted, s.metric, sites, forward_kwargs=kw)
        assert agree(res, model, s.clean, s.corrupted, s.metric, forward_kwargs=kw) < TOL / 10
    assert res.meta["resume"]


def test_code_patching_equals_the_reference_on_the_reasoner(reasoner):
    model, s = reasoner
    kw, L = s.forward_kwargs, s.clean.shape[1]
    where = sorted({int(s.leaf_pos[0]), int(s.target_pos[0]), *range(0, L, 8)})
    sites = Sites("steps.*.bottleneck.hook_codes", positions=where)
    res = patch(model, s.clean, s.corrupted, s.metric, sites, forward_kwargs=kw)
    agree(res, model, s.clean, s.corrupted, s.metric, forward_kwargs=kw)
    assert (res.df.status == "ok").sum() >= 2  # the changed leaf's code, and the target's, are patched
    # any value, through sources=: x at the target's slot holds 4 after step 0
    name, pos = "steps.0.bottleneck.hook_codes", int(s.target_pos[0])
    _, cache = model.run_with_cache(s.corrupted, names_filter=name, **kw)
    codes = cache[name].clone()
    codes[:, pos, 3] = 4
    res = patch(model, s.clean, s.corrupted, s.metric, [Site(name, pos)], sources={name: codes}, forward_kwargs=kw)
    agree(res, model, s.clean, s.corrupted, s.metric, sources={name: codes}, forward_kwargs=kw)
    for ablation in ("zero", "resample"):
        sites = Sites("steps.*.bottleneck.hook_codes", positions=[int(s.leaf_pos[0]), int(s.target_pos[0])])
        res = patch(model, s.clean, s.corrupted, s.metric, sites, ablation=ablation, forward_kwargs=kw)
        agree(res, model, s.clean, s.corrupted, s.metric, ablation=ablation, forward_kwargs=kw)


def test_patch_equals_the_reference_on_act_ponder_steps():
    from probes.act import patching_setup

    model = models.load("act-parity")
    s = patching_setup(model, n=8, seed=0)
    for sites in (Sites("time.0.ponder.*.hook_state"), Sites("time.0.ponder.*.hook_halt_logit"), "time.0.hook_state"):
        for ablation in (None, "mean"):
            res = patch(model, s.clean, s.corrupted, s.metric, sites, ablation=ablation)
            agree(res, model, s.clean, s.corrupted, s.metric, ablation=ablation)
    assert "ponder" in patch(model, s.clean, s.corrupted, s.metric, s.sites).df


def test_patch_equals_the_reference_on_warp_time_steps():
    from probes.warp import patching_setup

    model = models.load("warp-msd")
    s = patching_setup(model, n=2, seed=0)
    sites = Sites("time.*.hook_theta", time=range(0, s.clean.shape[1], 16))
    res = patch(model, s.clean, s.corrupted, s.metric, sites)
    agree(res, model, s.clean, s.corrupted, s.metric)
    assert list(res.df.time) == list(range(0, s.clean.shape[1], 16))


def test_attribution_equals_the_reference_on_a_linear_loop():
    torch.manual_seed(0)
    model = LinearLoop()
    clean, corrupted = torch.randn(2, 4, 3), torch.randn(2, 4, 3)
    w = torch.randn(4, 3)

    def metric(out):
        return (out * w).sum((1, 2))

    sites = Sites("steps.*.hook_*", positions="each")
    for ablation in (None, "zero", "mean", "resample"):
        approx = attribute(model, clean, corrupted, metric, sites, ablation=ablation)
        assert (approx.df.status == "ok").all() and len(approx.df) == 3 * 2 * 4
        agree(approx, model, clean, corrupted, metric, ablation=ablation)
        exact = patch(model, clean, corrupted, metric, sites, ablation=ablation)
        agree(exact, model, clean, corrupted, metric, ablation=ablation)


def test_the_reference_is_independent_and_the_benchmark_uses_it():
    import workbench.patching as wp

    assert not hasattr(wp, "patch_loop")  # the per-site reference lives here, not beside what it checks

    def imports(path: Path) -> set[tuple[str, str]]:
        tree = ast.parse(path.read_text())
        out = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                out |= {(node.module or "", a.name) for a in node.names}
        return out

    mine = imports(Path(__file__))
    assert {name for mod, name in mine if mod == "workbench.patching"} == {"patch"}
    bench = imports(ROOT / "bench" / "patching.py")
    assert ("tests.test_oracles", "reference_patch") in bench
    assert not any(mod == "workbench.patching" and name.startswith("_") for mod, name in bench)
    assert not any(mod == "workbench.patch_runner" for mod, _ in mine | bench)  # patch's own machinery
