"""The recursive reasoner for the explorer: problems, rollouts, the step-by-step state table,
attention patterns, the step lens and interventions on the discrete bottleneck.

>>> problem = parse_problem(model, "20 = x_7; 3 = x_1; x_7 + x_1 = x_23")
>>> ro = rollout(model, problem, steps=default_steps(model, problem))
>>> state_table(ro)                       # one row per (variable, step): value, truth, status
>>> attention(model, problem, ro.steps, step=1, layer=0)   # [heads, query, key]
>>> step_lens(model, problem, ro.steps)   # value-head decoding after every layer of every step
>>> intervene(model, problem, ro.steps, variable=7, value=5, at_step=0)   # a Rollout
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from models.reasoner_data import encode_batch
from models.reasoner_eval import ood_task
from models.registry import task_of
from probes.reasoner import value_labels
from workbench.tasks import graph_arith as ga

STATUSES = ("not yet computed", "correct", "wrong")
WHERE = ("definition", "every occurrence")
MAX_PROBLEM_CHARS = 20_000  # far above any problem a reasoner takes (its name pool caps the equations)


def check_model(model) -> None:
    """Read what the pages need from the model's config; ``ValueError`` says what is unusable."""
    try:
        task_of(model)
    except (TypeError, ValueError, AttributeError) as e:
        raise ValueError(f"the checkpoint's task config is unusable: {e}") from e


# ------------------------------------------------------------------ problems
def parse_problem(model, text: str) -> ga.Problem:
    """The problem in ``text`` (the task's format); ``ValueError`` names the position and rule.

    Texts longer than ``MAX_PROBLEM_CHARS`` are refused before they are read.
    """
    if len(text) > MAX_PROBLEM_CHARS:
        raise ValueError(f"the problem text has {len(text):,} characters; at most {MAX_PROBLEM_CHARS:,} are accepted")
    cfg, task = model.cfg, task_of(model)
    problem = ga.parse(text, modulus=cfg.modulus, name_pool=cfg.name_pool, max_fan_in=task.max_fan_in,
                       max_tokens=cfg.max_tokens)
    need = ga.steps_needed(problem.depth, cfg.scheme)
    if not cfg.fixed_steps and need > cfg.max_steps:
        raise ValueError(f"the problem has depth {problem.depth} and needs {need} steps; this model runs at most "
                         f"max_steps={cfg.max_steps}")
    return problem


def sample_text(model, n_nodes: int, seed: int) -> str:
    """A fresh problem of ``n_nodes`` nodes (depth cap scaled as in the OOD table), as text."""
    name_pool = model.cfg.name_pool
    if not 2 <= int(n_nodes) <= name_pool:
        raise ValueError(f"number of nodes {n_nodes} is out of range; allowed 2..{name_pool} (the name pool)")
    task = ood_task(task_of(model), int(n_nodes))
    return ga.format_problem(ga.sample(task, 1, np.random.default_rng(int(seed)))[0])


def default_steps(model, problem: ga.Problem) -> int:
    """The steps the model runs at evaluation for this problem's depth."""
    return min(model.cfg.steps_for_depth(problem.depth), model.cfg.max_steps)


def check_steps(model, steps: int) -> int:
    if not 1 <= int(steps) <= model.cfg.max_steps:
        raise ValueError(f"steps={steps} is out of range; allowed 1..{model.cfg.max_steps} (max_steps)")
    return int(steps)


def tokens_of(model, problem: ga.Problem) -> torch.Tensor:
    """[1, L, 4] factored tokens of one problem."""
    return torch.from_numpy(encode_batch([problem], model.cfg)["factors"])


def token_labels(enc: ga.Encoded, modulus: int) -> list[str]:
    """A readable label for every token position: ``x_7``, ``+``, ``20``, ``=``, ``;``."""
    return [ga.describe_token(enc, i, modulus) for i in range(len(enc.answer))]


# ------------------------------------------------------------------ rollouts
@dataclass
class Rollout:
    """One problem run for ``steps`` steps; ``codes`` [T, L] is the value factor after each step."""

    problem: ga.Problem
    enc: ga.Encoded
    codes: np.ndarray
    modulus: int

    @property
    def steps(self) -> int:
        return self.codes.shape[0]

    def summary(self) -> dict:
        """Node accuracy and fully solved (value factor) after the last step."""
        define = self.enc.role == ga.ROLE_DEFINE
        right = self.codes[-1] == self.enc.answer
        slot = self.enc.slot
        return {"node_accuracy": float(right[define].mean()), "fully_solved": bool(right[slot].all()),
                "steps": self.steps}


@torch.no_grad()
def rollout(model, problem: ga.Problem, steps: int, fwd_hooks=()) -> Rollout:
    """Run ``problem`` for ``steps`` steps (with optional TransformerLens forward hooks)."""
    steps = check_steps(model, steps)
    cfg = model.cfg
    tokens = tokens_of(model, problem)
    if fwd_hooks:
        out = model.run_with_hooks(tokens, steps=steps, fwd_hooks=list(fwd_hooks))
    else:
        out = model(tokens, steps=steps)
    enc = ga.encode(problem, cfg.scheme, cfg.name_pool)
    return Rollout(problem, enc, out.codes[0, :, :, 3].numpy(), cfg.modulus)


def _slot_label(enc: ga.Encoded, problem: ga.Problem, pos: int) -> str:
    var = int(enc.factors[pos, 1])
    if enc.role[pos] == ga.ROLE_DEFINE:
        return f"x_{var}"
    return f"x_{var} (in x_{problem.equations[int(enc.equation[pos])].target})"


def state_table(ro: Rollout, operands: bool = False) -> pd.DataFrame:
    """Each variable's decoded value at every step, against the exact algorithm.

    One row per (slot, step): step -1 = the input, step t = the state after ``steps.{t}``. ``operands`` adds the operand slots that
    the one-hop scheme fills. ``status``: "correct" (the slot holds its true value), "not yet
    computed" (still EMPTY), "wrong" (any other value). ``exact``: the exact algorithm's
    value after that step.
    """
    enc, p = ro.enc, ro.modulus
    names = value_labels(p)
    keep = (enc.role == ga.ROLE_DEFINE) | (operands & enc.slot & (enc.role == ga.ROLE_OPERAND))
    rows = []
    for pos in np.flatnonzero(keep):
        label = _slot_label(enc, ro.problem, int(pos))
        truth = int(enc.answer[pos])
        for step in range(-1, ro.steps):
            code = int(enc.factors[pos, 3]) if step < 0 else int(ro.codes[step, pos])
            status = "correct" if code == truth else ("not yet computed" if code == ga.value_empty(p) else "wrong")
            rows.append({"slot": label, "pos": int(pos), "variable": int(enc.factors[pos, 1]),
                         "role": "definition" if enc.role[pos] == ga.ROLE_DEFINE else "operand",
                         "depth": int(enc.depth[pos]), "fill_step": int(enc.fill_step[pos]), "step": step,
                         "code": code, "value": names[code], "truth": names[truth],
                         "exact": names[int(enc.state(step + 1)[pos])], "status": status})
    return pd.DataFrame(rows)


def changed_cells(before: pd.DataFrame, after: pd.DataFrame) -> pd.DataFrame:
    """Rows (slot, step, before, after) where two state tables of the same problem differ."""
    both = before[["slot", "step", "value"]].merge(after[["slot", "step", "value"]], on=["slot", "step"],
                                                    suffixes=("_before", "_after"))
    diff = both[both.value_before != both.value_after]
    return diff.rename(columns={"value_before": "before", "value_after": "after"}).reset_index(drop=True)


# ----------------------------------------------------------------- attention
def _check_index(value: int, n: int, name: str) -> int:
    if not 0 <= int(value) < n:
        raise ValueError(f"{name}={value} is out of range; allowed 0..{n - 1}")
    return int(value)


@torch.no_grad()
def attention(model, problem: ga.Problem, steps: int, step: int, layer: int) -> np.ndarray:
    """Attention pattern of every head at one step and layer: [heads, query, key]."""
    step = _check_index(step, check_steps(model, steps), "step")
    layer = _check_index(layer, model.cfg.n_layers, "layer")
    name = f"steps.{step}.blocks.{layer}.attn.hook_pattern"
    _, cache = model.run_with_cache(tokens_of(model, problem), steps=step + 1, names_filter=name)
    return cache[name][0].numpy()


def reads(enc: ga.Encoded) -> pd.DataFrame:
    """Where the exact algorithm reads: one row (query, key, kind) per dependency of a slot.

    ``kind`` is "definition" (the key defines the variable) or "operand" (an operand slot).
    """
    rows = []
    for q, deps in enumerate(enc.deps):
        for k in deps[deps >= 0]:
            rows.append({"query": q, "key": int(k),
                         "kind": "definition" if enc.role[k] == ga.ROLE_DEFINE else "operand"})
    return pd.DataFrame(rows, columns=["query", "key", "kind"])


# ----------------------------------------------------------------- step lens
@torch.no_grad()
def step_lens(model, problem: ga.Problem, steps: int) -> pd.DataFrame:
    """The value head applied to the residual stream after every layer of every step.

    One row per (step, layer, slot): ``layer`` 0 is the step's input, l + 1 is after block l
    (the last layer is what the model decodes). Columns: step, layer, layer_name, pos, slot,
    code, value, p_answer (probability of the true value), correct.
    """
    steps = check_steps(model, steps)
    cfg = model.cfg
    names = [f"steps.{t}.hook_input" for t in range(steps)]
    names += [f"steps.{t}.blocks.{l}.hook_resid_post" for t in range(steps) for l in range(cfg.n_layers)]
    _, cache = model.run_with_cache(tokens_of(model, problem), steps=steps, names_filter=lambda n: n in set(names))
    enc = ga.encode(problem, cfg.scheme, cfg.name_pool)
    slots = np.flatnonzero(enc.slot)
    answer = torch.from_numpy(enc.answer[slots])
    labels = value_labels(cfg.modulus)
    layer_names = ["input"] + [f"block {l}" for l in range(cfg.n_layers)]
    value_head = model.heads[3]  # the value factor's head (factors: syntax, variable, op, value)
    rows = []
    for t in range(steps):
        resid = [cache[f"steps.{t}.hook_input"]] + [cache[f"steps.{t}.blocks.{l}.hook_resid_post"]
                                                    for l in range(cfg.n_layers)]
        for layer, r in enumerate(resid):
            probs = value_head(model.ln_final(r[0, slots])).softmax(-1)  # [slots, p + 2]
            code = probs.argmax(-1)
            p_ans = probs.gather(1, answer[:, None])[:, 0]
            for i, pos in enumerate(slots):
                rows.append({"step": t, "layer": layer, "layer_name": layer_names[layer], "pos": int(pos),
                             "slot": _slot_label(enc, problem, int(pos)), "code": int(code[i]),
                             "value": labels[int(code[i])], "p_answer": float(p_ans[i]),
                             "correct": bool(code[i] == answer[i])})
    return pd.DataFrame(rows)


def lens_overview(lens: pd.DataFrame) -> pd.DataFrame:
    """Fraction of slots the lens decodes to their true value, per (step, layer)."""
    return (lens.groupby(["step", "layer", "layer_name"], as_index=False)["correct"].mean()
            .rename(columns={"correct": "accuracy"}))


# -------------------------------------------------------------- intervention
def intervene(model, problem: ga.Problem, steps: int, variable: int, value: int, at_step: int,
              where: str = "definition") -> Rollout:
    """Set variable ``x_variable`` to ``value`` after step ``at_step`` and run on.

    Writes the value into ``steps.{at_step}.bottleneck.hook_codes`` at the variable's
    defining slot (``where="definition"``) or at every slot naming it; the next step reads it.
    """
    cfg = model.cfg
    steps = check_steps(model, steps)
    at_step = _check_index(at_step, steps, "step")
    if not 0 <= int(value) < cfg.modulus:
        raise ValueError(f"value={value} is out of range; allowed 0..{cfg.modulus - 1} (Z_{cfg.modulus})")
    if where not in WHERE:
        raise ValueError(f"where={where!r}; allowed: {WHERE}")
    defined = [e.target for e in problem.equations]
    if int(variable) not in defined:
        raise ValueError(f"x_{variable} is not a variable of this problem; allowed: "
                         f"{', '.join(f'x_{v}' for v in sorted(defined))}")
    enc = ga.encode(problem, cfg.scheme, cfg.name_pool)
    named = enc.factors[:, 1] == int(variable)
    roles = (ga.ROLE_DEFINE,) if where == "definition" else (ga.ROLE_DEFINE, ga.ROLE_OPERAND)
    pos = torch.from_numpy(np.flatnonzero(named & np.isin(enc.role, roles)))

    def set_value(codes, hook):
        codes = codes.clone()
        codes[:, pos, 3] = int(value)
        return codes

    return rollout(model, problem, steps, fwd_hooks=[(f"steps.{at_step}.bottleneck.hook_codes", set_value)])
