"""Exact activation patching over every loop step, layer, position and head.

``patch(model, clean, corrupted, metric, sites=...)`` runs the corrupted input, replaces
the activation at one site with its value from the clean run, and reports the metric,
site by site, normalised so that 0 = the corrupted run and 1 = the clean run::

    >>> res = patch(model, clean, corrupted, metric,
    ...             sites=Sites("steps.*.blocks.*.hook_resid_pre", positions="each"),
    ...             forward_kwargs={"steps": 9})
    >>> res.df[["step", "layer", "pos", "score"]]
    >>> res.figure()                       # step x position heatmap per layer

* ``clean`` / ``corrupted``: the model's first positional input (or a tuple of positional
  inputs), batch first, with equal shapes. ``forward_kwargs`` go to every forward call;
  give recurrent models a fixed number of steps.
* ``metric(output) -> [batch]``: one number per problem, e.g. the logit difference of
  the right and the wrong answer at a node. It always receives an output for exactly the
  problems of ``clean`` (rows in the same order), so per-problem labels work as is.
  Scores use the batch mean: ``score = (m - m_corrupted) / (m_clean - m_corrupted)``.
* ``ablation``: ``None`` (the default: patch clean into corrupted, "denoising");
  ``"zero"`` / ``"mean"`` (run the clean input and replace the site by zeros / by its mean
  over the corrupted batch, a reference distribution); ``"resample"`` (run the clean input
  and replace the site by the corrupted run's value, "noising"). Scores keep their
  meaning: 1 = as clean, 0 = as corrupted.
* ``effect``: what a site does, the same direction for every ablation: ``score`` when
  patching clean into corrupted (the share of the clean - corrupted gap restored), ``1 -
  score`` for the ablations of the clean run (the share of the gap removed). ``res.top(k)``
  ranks on ``|effect|``, so a zero ablation lists the sites that matter, not the unaffected
  ones (whose score is ~1).
* ``status``: ``"ok"``, or ``"no-op"`` where the written activation equals the one already
  there bit for bit, or where the corrupted run alone never fires the site (ACT ponders fewer
  steps there): the patch cannot change anything, its metric is the base metric.
* Patching ``steps.{t}.bottleneck.hook_codes`` of the reasoner sets a variable's value at
  step t (the codes are integers; the clean code is written in, or any code given in
  ``sources``).

How it is fast while staying exact:

1. **One batched forward for many sites.** The base input is replicated along the batch,
   copy j patches site j; sites are processed in chunks whose size keeps the activations
   of one loop step under ``memory_mb``.
2. **Shared prefix computed once.** A patch at loop step t cannot change steps < t (nor,
   at block l, the blocks before l). Models offering the *resume protocol* below restart
   the batched run at step t (block l) from the base run's recorded state instead of from
   the input.
3. **Settled copies stop early.** After the patched step, and after every later step, each
   copy's loop state (the *carry*) is compared with the base run's; once it is bit-identical
   (typical behind a discrete bottleneck: the argmax did not change, or an error was
   repaired), every later step is identical too, so its output is assembled from its own
   record so far and the base run's record after, without running those steps.
4. **No-op patches are not run.** A site whose source activation equals the base
   activation bit for bit cannot change anything: its metric is the base metric.
5. **Copies join the base runs mid-loop.** Where the model can grow its batch at the start
   of a loop step (``model.joins(forward_kwargs)``, ``join=``: WARP's time steps, ACT's ponder
   steps), the clean run, the corrupted run and every copy share one forward: at step t one
   copy of the corrupted rows joins per site of step t, and its site takes the clean rows'
   activation of that same pass. One pass pays each step's fixed cost once; resuming from a
   recorded run would pay it twice. Used without ablation, for whole-activation sites inside
   the loop, while the grown batch fits ``memory_mb`` (``res.meta["joined"]``).
6. **Faster kernels for the copies.** A model may offer kernels for the patched copies
   (``patching_kernels()``: the discrete reasoner's fused attention, equal to the default path
   to ~1e-6); the base runs keep the default path. ``fused=False`` turns this off.

Models without the protocol fall back to full re-runs, still batched.

The resume protocol (``resume_loop``, ``resume_names(t)``, ``resume_state(cache, t) ->
LoopState``, ``model(..., start=state)``, optionally ``resume_inner`` and ``joins``) is defined
in ``workbench.hooks`` (``Resumable``, ``LoopState``); the reasoner, ACT and WARP implement it.
The batched runs themselves (chunks, resuming, settling, refilling, the patch hooks) are in
``workbench.patch_runner``, the single joined pass in ``workbench.patch_joined``. What this
module shares with ``workbench.attribution`` (argument checks, base runs, metric
normalisation, ablation sources, the result table) is in ``workbench.runs``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from workbench.hooks import HookName, LoopState, loop_sizes, repeat_batch, resumable
from workbench.patch_joined import join_plan, run_joined
from workbench.patch_runner import Runner, Sources, all_resume_names, bands, hooked, patch_hook, resume_point
from workbench.results import OK, Result, effect
from workbench.runs import (ABLATIONS, BaseRun, Baselines, Metric, base_run, frame, metric_per_copy, metric_values,
                            setup, slice_rows, unreached)
from workbench.sites import Site, SiteSelection, resolve

# LoopState and resumable live in workbench.hooks (the resume protocol), ABLATIONS in workbench.runs;
# they stay importable from here.
__all__ = ["patch", "LoopState", "resumable", "ABLATIONS"]


# ----------------------------------------------------------------- public API
def patch(
    model,
    clean,
    corrupted,
    metric: Metric,
    sites: SiteSelection,
    *,
    ablation: str | None = None,
    sources: Mapping[str, Tensor] | None = None,
    forward_kwargs: Mapping[str, Any] | None = None,
    reuse_prefix: bool = True,
    refill: bool = True,
    memory_mb: float = 512,
    fused: bool = True,
    progress: bool = False,
) -> Result:
    """Exact activation patching, one site at a time, many sites per forward.

    Args:
        model: a ``HookedRecurrentModule`` (any TransformerLens ``HookedRootModule`` works).
        clean, corrupted: inputs [batch, ...] (or tuples of them) of equal shapes.
        metric: ``fn(output) -> [batch]``; higher = more like clean. Written for one batch; the
            copies of a forward share one call through ``torch.func.vmap`` where it allows (a
            metric that calls ``.item()``, branches on values or uses NumPy is called per copy).
        sites: hook names, glob patterns, a names_filter, ``Sites(...)`` or ``Site`` list.
        ablation: None, "zero", "mean" or "resample" (see the module docstring).
        sources: {hook name: activation [batch, ...]} to write instead of the clean one at
            that hook, e.g. codes with one value changed to set a variable to any value.
        forward_kwargs: keyword arguments for every forward call (e.g. ``{"steps": 9}``); not
            tensors with a row per input (ACT's ``mask``): those go with the inputs,
            ``clean=(x, mask)``, as the copies repeat only the inputs.
        reuse_prefix: use the resume protocol when the model has it (False: full re-runs).
        refill: for models whose copies settle, run every site in one sweep over the loop
            steps, refilling the batch with the next step's sites as copies settle (False:
            one group of copies per resume point, each run until its copies settle).
        memory_mb: budget for one chunk's activations of one loop step.
        fused: the patched copies take the faster kernels the model offers for them
            (``model.patching_kernels()``; the discrete reasoner's fused attention, ~1.3x faster
            on long problems, equal to the default path to ~1e-6); the base runs never do, so
            no-op sites stay decided bit for bit. False: every forward takes the default path,
            as a plain ``run_with_hooks`` does.
        progress: show a progress bar.

    Returns:
        ``Result`` with one row per site: identifying columns, ``metric`` (batch mean of
        the patched metric), ``score`` (normalised: 0 = corrupted, 1 = clean), ``effect``
        (``score`` without ablation, ``1 - score`` with one) and ``status`` (``"ok"`` or
        ``"no-op"``). ``res.top(k)`` / ``res.summary()`` rank the sites on ``|effect|``.
    """
    run = setup(model, clean, corrupted, sites, ablation, forward_kwargs)
    fk, B = run.forward_kwargs, run.batch
    for key, value in fk.items():
        if torch.is_tensor(value) and value.ndim and value.shape[0] == B:
            raise ValueError(f"forward_kwargs[{key!r}] is a tensor with a row per input ({list(value.shape)}, "
                             f"batch {B}); patch runs many copies of the batch in one forward and repeats only the positional "
                             f"inputs: pass it with them, clean=(x, {key}) and corrupted=(x_corrupted, {key}), "
                             "if the model's forward takes it positionally after x")
    use_resume = reuse_prefix and resumable(model)
    stats = {"forwards": 0, "copies_run": 0, "copies_settled": 0}
    plan = join_plan(model, run, sources) if use_resume else None
    if plan:
        with torch.no_grad():
            one = run_joined(model, run, metric, plan, sources, memory_mb, stats)
        if one is not None:
            baselines = Baselines(float(one.clean.mean()), float(one.corrupted.mean()))
            values = torch.where(torch.tensor(one.noop, dtype=torch.bool)[:, None], one.corrupted, one.values)
            meta = {"copies_per_forward": len(one.sites), "resume": True, "refill": False, "joined": True,
                    "last_step": [-1 if skip else one.steps - 1 for skip in one.noop]}
            return _result(run, one.sites, values, one.noop, baselines, {**meta, **stats})
    resume_names = all_resume_names(model) if use_resume else set()

    with torch.no_grad():
        keep = lambda n: run.want(n) or n in resume_names  # noqa: E731
        clean_run = base_run(model, run.clean, fk, keep)  # sizes of every hook: the chunk size
    site_list = resolve(run.sites, clean_run.shapes, model)
    copies = max(1, int(memory_mb * 2**20 // max(1, clean_run.step_bytes * B)))  # a copy is B rows
    joint = None
    with torch.no_grad():
        if _one_forward(model, site_list, clean_run.shapes, ablation, use_resume, copies):
            # the corrupted run and every patched copy of it in one batch: a forward less
            corr_run, joint = _base_and_copies(model, run, metric, site_list, clean_run.cache, sources, stats)
        else:
            corr_run = base_run(model, run.corrupted, fk, keep, measure=False)  # only what patching reads
    m_clean = metric_values(metric, clean_run.output, B, "clean")
    m_corr = metric_values(metric, corr_run.output, B, "corrupted")
    baselines = Baselines(float(m_clean.mean()), float(m_corr.mean()))

    never = unreached(model, corr_run.output, (s.name for s in site_list)) if ablation is None else set()
    for s in site_list:
        if s.name not in corr_run.shapes and s.name not in never:
            raise ValueError(f"hook {s.name!r} fired in the clean run but not in the corrupted one; "
                             "fix the number of steps with forward_kwargs")
    base_cache, base_metric = (corr_run.cache, m_corr) if ablation is None else (clean_run.cache, m_clean)
    sources = Sources(ablation, clean_run.cache, corr_run.cache, base_cache, sources)

    values = torch.empty(len(site_list), B)
    noop = [False] * len(site_list)
    todo: dict[Any, list[int]] = {}
    for i, s in enumerate(site_list):
        if s.name in never:  # the patched run never gets there: it is the corrupted run
            values[i], noop[i] = base_metric, True
            continue
        src, base = sources[s.name], base_cache[s.name]
        if src.shape != base.shape:
            raise ValueError(f"{s.name}: clean and corrupted activations have different shapes "
                             f"{list(src.shape)} vs {list(base.shape)}")
        idx = s.index(base.shape)
        if torch.equal(src[idx].to(base.dtype), base[idx]):  # a no-op patch changes nothing
            values[i] = base_metric
            noop[i] = True
            continue
        if joint is not None:  # already run
            values[i] = joint[i]
            continue
        key = resume_point(model, s.name) if use_resume else None
        todo.setdefault(key, []).append(i)

    runner = Runner(model, run.base, base_cache, fk, metric, B, sources, resume_names, stats)
    # the last loop step each site's copy ran (it settled, or the run ended); -1: not run (a no-op)
    last_step = [-1] * len(site_list)
    if joint is not None and use_resume:  # every copy ran to the end
        loop = model.resume_loop
        T = loop_sizes((n for n in clean_run.shapes if HookName.parse(n).loop(loop) is not None), loops=(loop,))
        last_step = [-1 if skip else T.get(loop, 0) - 1 for skip in noop]
    sweep = use_resume and runner.settles and refill
    if use_resume and not runner.settles:
        chunks = bands(todo, copies, runner.T)
    else:
        chunks = [(key, idx[i: i + copies])
                  for key, idx in sorted(todo.items(), key=lambda kv: (kv[0] is None, kv[0] or ()))
                  if not (sweep and key is not None) for i in range(0, len(idx), copies)]
    kernels = getattr(model, "patching_kernels", None) if fused else None
    with torch.no_grad(), (kernels() if kernels else nullcontext()):  # the patched runs build no autograd graph
        if sweep and any(key is not None for key in todo):
            looped = {key: idx for key, idx in todo.items() if key is not None}
            for i, (v, u) in runner.sweep(looped, site_list, copies, progress).items():
                values[i], last_step[i] = v, u
        for key, chunk in tqdm(chunks, disable=not progress, desc="patch", leave=False):
            chunk_sites = [site_list[i] for i in chunk]
            if key is None:
                values[chunk] = runner.full(chunk_sites)
            else:
                values[chunk], ends = runner.resumed(*key, chunk_sites)
                for i, u in zip(chunk, ends):
                    last_step[i] = u

    meta = {"copies_per_forward": copies, "resume": use_resume, "refill": sweep, "joined": False,
            "last_step": last_step, **stats}
    return _result(run, site_list, values, noop, baselines, meta)


def _result(run, sites: Sequence[Site], values: Tensor, noop: list[bool], baselines: Baselines, meta: dict) -> Result:
    """The result table from each site's patched metrics [sites, batch]."""
    rows = []
    for s, m, skip in zip(sites, values.mean(1).tolist(), noop):
        score = baselines.score(m)
        rows.append({**s.row(), "metric": m, "score": score, "effect": effect(score, run.ablation),
                     "status": "no-op" if skip else OK})
    meta = {
        **baselines.meta(run.ablation, run.batch),
        "sites": len(sites), "sites_noop": sum(noop), "rows": (len(sites) - sum(noop)) * run.batch,
        **meta, "seconds": run.seconds(),
    }
    return Result("patch", frame(rows), "score", meta)


# ------------------------------------------------------- one forward for all
def _one_forward(model, sites: Sequence[Site], shapes: Mapping[str, tuple], ablation, use_resume: bool,
                 copies: int) -> bool:
    """Whether the corrupted run and every patched copy can share one forward from the input.

    Only when nothing would be resumed later than the input anyway (no resume protocol, or a
    continuous carry whose copies all start at step 0 in one band), every copy fits in one
    chunk next to the base rows, and the source is the clean run (no ablation): then the
    corrupted base run is just B more rows of that forward, and its activations, recorded
    there, decide the no-ops afterwards (a patch equal bit for bit to the activation of that
    forward). Small problems are dominated by the number of forwards, so this is where it
    matters (ACT's ponder steps: 3 forwards become 2).
    """
    if ablation is not None or not sites or len(sites) + 1 > copies:
        return False
    if not use_resume:
        return True
    if getattr(model, "resume_settles", True):
        return False
    loop = model.resume_loop
    T = loop_sizes((n for n in shapes if HookName.parse(n).loop(loop) is not None), loops=(loop,)).get(loop, 0)
    todo: dict[Any, list[int]] = {}
    for i, s in enumerate(sites):
        todo.setdefault(resume_point(model, s.name), []).append(i)
    chunks = bands(todo, copies, T)
    return len(chunks) == 1 and chunks[0][0] in (None, (0, 0))


def _base_and_copies(model, run, metric: Metric, sites: Sequence[Site], clean_cache, given, stats: dict):
    """One forward of the corrupted input and k patched copies of it: [(k + 1) * batch] rows.

    Returns (the corrupted run as a ``BaseRun`` recording the sites' hooks, metrics [k, batch]).
    The recording hook sees each activation before the patch hook replaces it.
    """
    B, k = run.batch, len(sites)
    cache: dict[str, Tensor] = {}

    def record(act: Tensor, hook) -> None:
        cache[hook.name] = act[:B].clone()

    names = list(dict.fromkeys(s.name for s in sites))
    src = Sources(None, clean_cache, {}, clean_cache, given)
    by_name: dict[str, list[tuple[int, Site]]] = {}
    for j, s in enumerate(sites):
        by_name.setdefault(s.name, []).append((j + 1, s))  # copy 0: the unpatched corrupted run
    hooks = [(n, record) for n in names] + [(n, patch_hook(e, src[n], k + 1, B)) for n, e in by_name.items()]
    with hooked(model, hooks):
        out = model(*repeat_batch(run.corrupted, k + 1), **run.forward_kwargs)
    stats["forwards"] += 1
    stats["copies_run"] += k
    values = metric_per_copy(metric, out, k + 1, B)
    corr = BaseRun(slice_rows(out, 0, B, (k + 1) * B), cache, {n: tuple(v.shape) for n, v in cache.items()}, 0)
    return corr, values[1:]
