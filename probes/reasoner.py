"""The recursive reasoner's glue for the analyses: inputs, metrics, probe rows, targets, codebook.

* ``patching_setup``: a clean problem, a corrupted copy with one leaf value changed (so the
  deepest node's answer changes), and the logit-difference metric at that node; every pair
  keeps the contract of ``probes.pairs`` (target changed, clean metric above corrupted).
* ``batches`` / ``collect``: rows for ``probes.collect`` at each variable's defining
  position (``collect`` skips the steps after a problem settles), with the targets:
  ``value`` (its value), ``depth`` (its graph depth) and ``computed`` (whether the exact
  algorithm has filled it after step t: site-dependent).
* ``codebook_report``: the codebook analysis of the value factor over a rollout, with the
  one-step repair rate (``models.reasoner_eval.repair_rate``).
* ``STUDY``: the family's study (``probes.study``) for the command line and the explorer.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from models import registry
from models.reasoner import Reasoner, ReasonerOutput
from models.reasoner_data import encode_batch, pad_stack
from probes import pairs
from probes.core import Activations, ProbeBatch, RowKeeper
from probes.study import Option, Study, Target
from workbench import codebook
from workbench.results import Result
from workbench.sites import Site, SiteSelection, Sites
from workbench.tasks import graph_arith as ga

__all__ = ["task_of", "PatchSetup", "patching_setup", "batches", "collect", "computed", "codebook_report", "value_labels",
           "STUDY"]

PATCH_SITES = "steps.*.blocks.*.hook_resid_pre"  # default patching sites (x every position)
PROBE_SITES = "steps.*.blocks.*.hook_resid_post"  # default probing sites


def task_of(model: Reasoner, **overrides) -> ga.GraphArithConfig:
    """The task the model was trained on, with optional overrides such as n_nodes (``models.registry.task_of``)."""
    return registry.task_of(model, **overrides)


def value_labels(modulus: int) -> list[str]:
    """Names of the value factor's codes: 0..p-1, N/A, EMPTY."""
    return [str(v) for v in range(modulus)] + ["N/A", "EMPTY"]


# ---------------------------------------------------------------- patching
@dataclass
class PatchSetup:
    """Inputs and metric for ``patch`` / ``attribute`` on the reasoner."""

    clean: Tensor  # [B, L, 4]
    corrupted: Tensor  # [B, L, 4]
    metric: callable  # ReasonerOutput -> [B]
    forward_kwargs: dict
    problems: list  # clean problems
    corrupted_problems: list
    target_pos: Tensor  # [B] defining position of the target node
    leaf_pos: Tensor  # [B] position of the changed literal
    description: str
    gaps: np.ndarray | None = None  # [B] metric(clean run) - metric(corrupted run), each >= margin
    target_changed: np.ndarray | None = None  # [B] the exact solver's answer differs (always, by construction)
    sites: Sites = field(default_factory=lambda: Sites(PATCH_SITES, positions="each"))  # the default selection
    loops: dict = field(default_factory=dict)  # restrictions of the loop axes of hand-typed sites (none)


def _corrupt(problem: ga.Problem, rng: np.random.Generator) -> tuple[ga.Problem, int, int]:
    """Change one leaf that the deepest node depends on, so that its value changes.

    Returns (corrupted problem, index of the target equation, index of the changed leaf).
    """
    target = max(range(problem.n_nodes), key=lambda i: (problem.depths[i], i))
    by_name = {e.target: i for i, e in enumerate(problem.equations)}
    ancestors, stack = set(), [target]
    while stack:
        i = stack.pop()
        for name in problem.equations[i].operands:
            j = by_name[name]
            if j not in ancestors:
                ancestors.add(j)
                stack.append(j)
    leaves = sorted(i for i in ancestors | {target} if problem.equations[i].is_leaf)
    for leaf in rng.permutation(leaves):
        for delta in rng.permutation(np.arange(1, problem.modulus)):
            eqs = list(problem.equations)
            eqs[leaf] = replace(eqs[leaf], literal=int((eqs[leaf].literal + delta) % problem.modulus))
            corrupted = ga.make_problem(tuple(eqs), problem.modulus)
            if corrupted.values[target] != problem.values[target]:
                return corrupted, target, int(leaf)
    raise ValueError("no leaf change alters the deepest node of this problem")


def _position(enc: ga.Encoded, equation: int, role: int) -> int:
    return int(np.flatnonzero((enc.equation == equation) & (enc.role == role))[-1])


def patching_setup(model: Reasoner, problems: list[ga.Problem] | None = None, *, n: int = 1,
                   n_nodes: int | None = None, seed: int = 0, steps: int | None = None,
                   margin: float = pairs.MARGIN) -> PatchSetup:
    """Clean problems, corrupted copies (one leaf changed) and the answer's logit difference.

    The metric is ``logit[clean answer] - logit[corrupted answer]`` of the value head at the
    deepest node's defining position after the last step: high on clean, low on corrupted.
    Every pair keeps the contract of ``probes.pairs``: the changed leaf changes the deepest
    node's value, and the metric of the clean run exceeds the corrupted run's by ``margin``.
    ``problems`` given: a ``ValueError`` names the problems that break it; sampled (``n``
    problems): problems are drawn until ``n`` keep it.
    """
    rng = np.random.default_rng(seed)
    task = registry.task_of(model, n_nodes=n_nodes)

    def corrupt(batch: list[ga.Problem]) -> list[tuple]:
        return [(p, *_corrupt(p, rng)) for p in batch]

    def build(items: list[tuple]) -> PatchSetup:
        return _setup(model, items, steps)

    if problems is not None:
        setup = build(corrupt(list(problems)))
        pairs.check(setup.target_changed, setup.gaps, margin, [f"problem {i}" for i in range(len(problems))],
                    what="problem")
        return setup
    setup, drawn = pairs.select(lambda k: corrupt(ga.sample(task, k, rng)), build, lambda e: e.gaps,
                                lambda e: e.target_changed, n, margin)
    if drawn > n:
        setup.description += (f"; {n} of {drawn} sampled problems kept: the others broke the contract "
                              f"(clean metric above corrupted by {margin:g})")
    return setup


def _setup(model: Reasoner, items: list[tuple], steps: int | None) -> PatchSetup:
    """The experiment of (clean problem, corrupted problem, target equation, changed leaf) items."""
    problems = [it[0] for it in items]
    corrupted, target_pos, leaf_pos, good, bad, changed = [], [], [], [], [], []
    for p, c, target, leaf in items:
        enc = ga.encode(p, model.cfg.scheme, model.cfg.name_pool)
        corrupted.append(c)
        target_pos.append(_position(enc, target, ga.ROLE_DEFINE))
        leaf_pos.append(_position(enc, leaf, ga.ROLE_LITERAL))
        good.append(p.values[target])
        bad.append(c.values[target])
        changed.append(ga.solve(c.equations, c.modulus)[0][target] != ga.solve(p.equations, p.modulus)[0][target])
    clean_t = torch.from_numpy(encode_batch(problems, model.cfg)["factors"])
    corr_t = torch.from_numpy(encode_batch(corrupted, model.cfg)["factors"])
    pos, good_t, bad_t = torch.tensor(target_pos), torch.tensor(good), torch.tensor(bad)
    rows = torch.arange(len(problems))

    def metric(out: ReasonerOutput) -> Tensor:
        logits = out.value_logits[:, -1][rows, pos]  # [B, p + 2]
        return logits[rows, good_t] - logits[rows, bad_t]

    T = steps or model.cfg.steps_for_depth(max(p.depth for p in problems))
    desc = (f"{len(problems)} problem(s), N={problems[0].n_nodes}; corrupted: one leaf literal changed; metric: "
            f"logit difference (clean - corrupted answer) at the deepest node after step {T - 1} "
            f"(steps 0..{T - 1})")
    fk = {"steps": T}
    gaps = pairs.metric_gaps(model, clean_t, corr_t, metric, fk)
    return PatchSetup(clean_t, corr_t, metric, fk, problems, corrupted, pos, torch.tensor(leaf_pos), desc,
                      gaps, np.array(changed, bool))


# ------------------------------------------------------------------ probes
def batches(model: Reasoner, problems: list[ga.Problem], *, batch_size: int = 64, steps: int | None = None,
            per_problem: int | None = None, seed: int = 0) -> Iterator[ProbeBatch]:
    """``ProbeBatch``es keeping each variable's defining position (``per_problem`` of them at random).

    Row metadata: problem, pos, equation, variable (name id), value, depth, fill_step,
    n_parents. Every batch runs the same number of steps (default: enough for the deepest
    problem), so every site has a row for every sample. ``collect`` gives the same rows faster.
    """
    T = steps or model.cfg.steps_for_depth(max(p.depth for p in problems))
    encs = _encodings(model, problems)
    positions = _defining_positions(model, problems, per_problem, seed, encs)
    for start in range(0, len(problems), batch_size):
        ids = np.arange(start, min(start + batch_size, len(problems)))
        yield _probe_batch(model, problems, ids, positions, T, encs)


def collect(model: Reasoner, problems: list[ga.Problem], sites: SiteSelection, *, batch_size: int = 64,
            steps: int | None = None, per_problem: int | None = None, seed: int = 0, progress: bool = False,
            device: str | torch.device | None = None) -> Activations:
    """``probes.collect(model, batches(...), sites)``, the same rows, without running settled steps.

    With the discrete bottleneck, a problem whose codes come back unchanged from step s
    feeds step s + 1 exactly the input of step s, so every later step repeats step s. Each
    problem therefore runs only until its graph should have settled (the exact algorithm's steps + 1,
    problems of equal need batched together, shortest token lists together); its rows for
    the later steps are copies of that last step's, and a problem that has not settled by
    then is run again for all ``steps``. With causal attention, a problem runs only the tokens
    up to the last position kept: nothing earlier reads a later token, in any step, so those
    rows are what the whole problem computes there (and it settles once that prefix has). The
    forwards take the fused attention kernel unless ``sites`` include attention scores or
    patterns (equal to the einsum path to ~1e-6); such sites keep every token, since their
    key axis is the problem's length. Rows come back in ``batches``'s order (problem, then
    position). ``meta``: ``forward_steps`` (problem-steps run), ``forward_tokens`` (token-steps
    run) and ``forward_pairs`` (query-key pairs run, summed over steps), padding not counted.
    """
    if not problems:
        raise ValueError("no problems to collect from")
    cfg = model.cfg
    T = steps or cfg.steps_for_depth(max(p.depth for p in problems))
    encs = _encodings(model, problems)  # each problem encoded once, for positions and every batch
    positions = _defining_positions(model, problems, per_problem, seed, encs)
    keeper = RowKeeper(model, sites, device=device)
    length = np.array([len(e.answer) for e in encs])
    if cfg.causal and not any(keeper.keep(h.name) for h in model.score_hooks):
        length = np.array([pos.max() + 1 if len(pos) else 1 for pos in positions])
    discrete = cfg.latent == "discrete"
    # the exact algorithm fills the kept tokens by this step; one more shows the codes repeat
    need = np.array([min(T, max(2, int(e.fill_step[:n].max()) + 1)) if discrete else T
                     for e, n in zip(encs, length)])
    order = np.lexsort((length, -need))  # the longest runs first: the first batch fires every site
    rerun: list[np.ndarray] = []
    with model.fused_attention(), tqdm(total=len(problems), disable=not progress, desc="collect", leave=False) as bar:
        for s in sorted(set(need.tolist()), reverse=True):
            group = order[need[order] == s]
            for start in range(0, len(group), batch_size):
                batch = _probe_batch(model, problems, group[start: start + batch_size], positions, s, encs, length)
                out, got = keeper.forward(batch)
                if s < T:
                    codes = out.codes  # [b, s, L, 4]
                    settled = (codes[:, -1] == codes[:, -2]).flatten(1).all(1).cpu().numpy()
                    rerun.append(group[start: start + batch_size][~settled])
                    keeper.add(batch, _repeat_last_step(got, s, T), keep=settled[batch.batch_index])
                else:
                    keeper.add(batch, got)
                bar.update(len(batch.args[0]))
        left = np.sort(np.concatenate(rerun)) if rerun else np.zeros(0, int)
        for start in range(0, len(left), batch_size):
            batch = _probe_batch(model, problems, left[start: start + batch_size], positions, T, encs, length)
            keeper.add(batch, keeper.forward(batch)[1])
    acts = keeper.activations()
    back = np.lexsort((acts.rows["pos"].to_numpy(), acts.rows["problem"].to_numpy()))
    for label in acts.data:
        acts.data[label] = acts.data[label][back]
    acts.rows = acts.rows.iloc[back].reset_index(drop=True)
    run = need.copy()
    run[left] += T  # run again from the start
    acts.meta.update({"steps": T, "forward_steps": int(run.sum()), "forward_tokens": int((run * length).sum()),
                      "forward_pairs": int((run * length**2).sum()), "reruns": len(left)})
    return acts


def _repeat_last_step(got: dict[str, Tensor], s: int, T: int) -> dict[str, Tensor]:
    """Rows of steps s..T-1 for a settled run of s steps: copies of step s - 1's."""
    last = f"steps.{s - 1}."
    out = dict(got)
    for name, rows in got.items():
        if name.startswith(last):
            for t in range(s, T):
                out[f"steps.{t}.{name[len(last):]}"] = rows
    return out


def _encodings(model: Reasoner, problems: list[ga.Problem]) -> list[ga.Encoded]:
    """Each problem encoded once (``ga.encode``), checked as ``encode_batch`` checks it."""
    cfg = model.cfg
    for i, p in enumerate(problems):
        if p.modulus != cfg.modulus:
            encode_batch([p], cfg)  # raises, naming the mismatch
    return [ga.encode(p, cfg.scheme, cfg.name_pool) for p in problems]


def _defining_positions(model: Reasoner, problems: list[ga.Problem], per_problem: int | None,
                        seed: int, encs: list[ga.Encoded] | None = None) -> list[np.ndarray]:
    """Per problem, the defining positions to keep (``per_problem`` of them at random, sorted)."""
    rng = np.random.default_rng(seed)
    out = []
    for i, p in enumerate(problems):
        enc = encs[i] if encs is not None else ga.encode(p, model.cfg.scheme, model.cfg.name_pool)
        pos = np.flatnonzero(enc.role == ga.ROLE_DEFINE)
        if per_problem is not None and per_problem < len(pos):
            pos = np.sort(rng.choice(pos, per_problem, replace=False))
        out.append(pos)
    return out


def _probe_batch(model: Reasoner, problems: list[ga.Problem], ids: np.ndarray, positions: list[np.ndarray],
                 steps: int, encodings: list[ga.Encoded] | None = None,
                 lengths: np.ndarray | None = None) -> ProbeBatch:
    """One forward over ``problems[ids]`` for ``steps`` steps, keeping ``positions[id]`` of each.

    ``encodings``: every problem's ``ga.encode`` (from ``_encodings``), reused instead of encoding again;
    ``lengths``: every problem's tokens to run (default: all of them)."""
    cfg = model.cfg
    chunk = [problems[i] for i in ids]
    encs = [encodings[i] for i in ids] if encodings is not None else _encodings(model, chunk)
    arr = pad_stack(encs, cfg.name_pool, cfg.modulus, None if lengths is None else lengths[ids])
    b_idx = np.concatenate([np.full(len(positions[i]), b) for b, i in enumerate(ids)]).astype(int)
    p_idx = np.concatenate([positions[i] for i in ids]).astype(int)
    eq = arr["factors"][b_idx, p_idx]
    meta = {
        "problem": np.asarray(ids)[b_idx], "pos": p_idx, "variable": eq[:, 1],
        "equation": np.array([encs[b].equation[p] for b, p in zip(b_idx, p_idx)]),
        "value": arr["answer"][b_idx, p_idx], "depth": arr["depth"][b_idx, p_idx],
        "fill_step": arr["fill_step"][b_idx, p_idx],
        "n_parents": np.array([len(chunk[b].equations[encs[b].equation[p]].operands)
                               for b, p in zip(b_idx, p_idx)]),
    }
    return ProbeBatch((torch.from_numpy(arr["factors"]),), {"steps": steps}, b_idx, p_idx, meta)


def computed(rows) -> callable:
    """Site-dependent target: has the exact algorithm filled this slot after the site's step?"""
    fill = rows["fill_step"].to_numpy()

    def target(site: Site) -> np.ndarray:
        t = site.loops.get("steps")
        if t is None:
            raise ValueError(f"'computed' needs a site inside the loop (steps.{{t}}.); got {site.name!r}")
        return fill <= t + 1

    return target


# ---------------------------------------------------------------- codebook
@torch.no_grad()
def codebook_report(model: Reasoner, problems: list[ga.Problem], *, steps: int | None = None, batch_size: int = 64,
                    repair: bool = True, max_latent_rows: int = 4096, seed: int = 0) -> Result:
    """The codebook analysis of the value factor over a rollout of ``problems``.

    Slots are the value slots the scheme fills; ``truth`` at step t is the exact
    algorithm's state after t + 1 steps (the value once filled, EMPTY before). Latents are
    ``hook_resid_final`` minus the embedding of the slot's other factors, so their
    distance to the nearest value embedding is the distance to the nearest input the
    discrete bottleneck could feed back. ``meta["repair"]`` holds the one-step
    error-correction rate (discrete latent only).
    """
    from models.reasoner_eval import repair_rate

    cfg, p = model.cfg, model.cfg.modulus
    T = steps or cfg.steps_for_depth(max(pr.depth for pr in problems))
    rng = np.random.default_rng(seed)
    codes, truth, depth, latents = [], [], [], []
    n_latent = 0
    for start in range(0, len(problems), batch_size):
        chunk = problems[start: start + batch_size]
        arr = encode_batch(chunk, cfg)
        tokens = torch.from_numpy(arr["factors"])
        out, cache = model.run_with_cache(tokens, steps=T, names_filter=lambda n: n.endswith(".hook_resid_final"))
        b, l = np.nonzero(arr["slot"])
        codes.append(out.codes[b, :, l, 3].numpy().T)  # [T, r]
        fill = arr["fill_step"][b, l]
        after = np.arange(1, T + 1)[:, None]
        truth.append(np.where(fill[None] <= after, arr["answer"][b, l][None], arr["factors"][b, l, 3][None]))
        depth.append(arr["depth"][b, l])
        take = max(0, min(len(b), max_latent_rows - n_latent))
        if take:
            sel = np.sort(rng.choice(len(b), take, replace=False))
            tb, tl = torch.from_numpy(b[sel]), torch.from_numpy(l[sel])
            base = sum(model.embed.tables[i](tokens[tb, tl, i]) for i in range(3))  # [r, d]
            resid = torch.stack([cache[f"steps.{t}.hook_resid_final"][tb, tl] for t in range(T)])  # [T, r, d]
            latents.append((resid - base[None]).numpy())
            n_latent += take
    codes_a = np.concatenate(codes, 1)
    rep = codebook.analyze(
        codes_a, n_codes=p + 2, truth=np.concatenate(truth, 1), depth=np.concatenate(depth),
        embeddings=model.embed.tables[3].weight.detach(), labels=value_labels(p), modulus=p,
        repair=(lambda: repair_rate(model, problems[:256], seed=seed)) if repair and cfg.latent == "discrete" else None,
    )
    if latents:  # drift is measured on a subsample of slots
        H = np.concatenate(latents, 1)
        dist, _ = codebook.nearest(H, model.embed.tables[3].weight.detach())
        scale = float(model.embed.tables[3].weight.norm(dim=1).mean())
        rep.df["distance"] = dist.mean(1)
        rep.df["relative_distance"] = rep.df["distance"] / scale
        rep.tables["drift"] = rep.df[["step", "distance", "relative_distance"]].copy()
    rep.meta.update({"model_latent": cfg.latent, "problems": len(problems), "steps": T,
                     "truth": "exact algorithm's state after each step (value once filled, else EMPTY)",
                     "latent_rows": n_latent})
    return rep


# ------------------------------------------------------------------- study
def _names(patterns) -> list[str]:
    names = [p for p in (patterns.replace(",", " ").split() if isinstance(patterns, str) else patterns) if p]
    if not names:
        raise ValueError(f"no sites: enter hook names or glob patterns such as '{PROBE_SITES}'")
    return names


class ReasonerStudy(Study):
    """The reasoner on graph arithmetic: a changed leaf, the answer's logit difference, probes at
    each variable's defining position, the value codebook."""

    family = "reasoner"
    metrics = ("logit difference", "clean answer probability")
    # the codes are integers, so most code patches are no-ops (clean == corrupted) and cost nothing
    page_sites = ("steps.*.bottleneck.hook_codes", "each")
    positions = "each"
    controls = ("none", "variable")
    fit_kwargs = {"groups": "problem"}
    default_target = "computed"
    sizes = {"patch": (1, 1, 16), "probe": (16, 8, 2000), "codebook": (16, 1, 512)}

    def options(self, model, analysis: str) -> list[Option]:
        train_n = task_of(model).n_nodes
        nodes = Option("n_nodes", "Nodes", min(train_n, 16), 2, model.cfg.name_pool, key="nodes", query="nodes",
                       help=f"graph size (trained on N = {train_n})")
        if analysis != "probe":
            return [nodes]
        return [Option("sites", "Sites (hook names or globs)", PROBE_SITES, text=2000, key="sites"), nodes,
                Option("per_problem", "Variables per problem", 4, 1, model.cfg.name_pool, query="per_problem",
                       help="defining positions kept per problem")]

    def experiment(self, model, n: int, seed: int, n_nodes: int | None = None, **options) -> PatchSetup:
        return patching_setup(model, n=n, n_nodes=n_nodes, seed=seed)

    def metric(self, model, experiment: PatchSetup, name: str):
        if name != "clean answer probability":
            return super().metric(model, experiment, name)
        rows, pos = torch.arange(len(experiment.problems)), experiment.target_pos
        good = torch.tensor([int(ga.encode(p, model.cfg.scheme, model.cfg.name_pool).answer[q])
                             for p, q in zip(experiment.problems, pos.tolist())])

        def probability(out: ReasonerOutput) -> Tensor:
            return out.value_logits[:, -1][rows, pos].softmax(-1)[rows, good]

        return probability

    def problems(self, model, n: int, seed: int, n_nodes: int | None = None) -> list[ga.Problem]:
        return registry.sample(model, n, np.random.default_rng(seed), n_nodes=n_nodes)

    def collect(self, model, n: int, seed: int, *, batch_size: int | None = None, progress: bool = False,
                sites=PROBE_SITES, n_nodes: int | None = None, per_problem: int = 4, **options) -> Activations:
        names = _names(sites)
        problems = self.problems(model, n, seed, n_nodes)
        steps = min(model.cfg.steps_for_depth(max(p.depth for p in problems)), model.cfg.max_steps)
        return collect(model, problems, Sites(names), batch_size=batch_size or 64, per_problem=per_problem,
                       steps=steps, seed=seed, progress=progress)

    def targets(self, model) -> dict[str, Target]:
        return {"value": Target("value", help="the variable's value"),
                "computed": Target(computed, help="the exact algorithm has filled the slot after this step"),
                "depth": Target("depth", help="the variable's depth in the graph")}

    def codebook(self, model, n: int, seed: int, n_nodes: int | None = None, **options) -> Result:
        return codebook_report(model, self.problems(model, n, seed, n_nodes), seed=seed)


STUDY = ReasonerStudy()
