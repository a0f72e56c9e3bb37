"""Modular arithmetic on a random computational graph (the recursive reasoner's task).

A problem is a DAG of ``n_nodes`` variables. The first ``n_leaves`` nodes are leaves with
uniform values in Z_p; every later node picks k ~ U{1..max_fan_in} distinct parents among
earlier nodes of depth < ``max_depth`` and folds them left to right with ops from
``ops`` (mod p). Variable names are drawn from a pool ``x_0 .. x_{name_pool-1}`` so they
carry no information. Equations are written in topological order, operands first and the
defined variable on the right::

    20 = x_7; 3 = x_1; x_7 + x_1 = x_23; x_23 = x_5

Factored tokens: each token is a tuple (syntax, variable, op, value); the value factor
ranges over 0..p-1 plus N/A and EMPTY. ``encode`` turns a problem into these tokens plus
the exact algorithmic trace (which value slot is known after which step) under either
write-back scheme:

* ``"paper"``: only the defining occurrence of a variable receives its value; a node of
  depth d is filled at step d+1 (it needs its parents' definitions).
* ``"one_hop"``: operand occurrences receive their variable's value too (one lookup per
  step); a defining slot is filled once all operand slots of its equation are filled.
  A node of depth d is filled at step 2d+1.

The solver (``solve``) is plain Python over the equations and shares no code with any
model. ``format_problem`` writes the text format; ``parse`` reads it back (it lives in
``graph_arith_parse`` with its error messages, and is reached here as ``graph_arith.parse``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


# ------------------------------------------------------------------ vocabulary
SYNTAX = ("pad", "num", "var", "op", "eq", "sep")
PAD, NUM, VAR, OP, EQ, SEP = range(len(SYNTAX))
OPS = ("+", "-", "*")
FACTORS = ("syntax", "variable", "op", "value")
SCHEMES = ("paper", "one_hop")

ROLE_OTHER, ROLE_LITERAL, ROLE_OPERAND, ROLE_DEFINE = range(4)


def op_na() -> int:
    """Index of N/A in the op factor."""
    return len(OPS)


def value_na(modulus: int) -> int:
    return modulus


def value_empty(modulus: int) -> int:
    return modulus + 1


def factor_sizes(modulus: int, name_pool: int) -> dict[str, int]:
    """Number of classes of each factor (the factored vocabulary = the codebook)."""
    return {"syntax": len(SYNTAX), "variable": name_pool + 1, "op": len(OPS) + 1, "value": modulus + 2}


def apply_op(op: str, a: int, b: int, modulus: int) -> int:
    if op == "+":
        return (a + b) % modulus
    if op == "-":
        return (a - b) % modulus
    if op == "*":
        return (a * b) % modulus
    raise ValueError(f"unknown op {op!r}; allowed: {OPS}")


# ------------------------------------------------------------------- problems
@dataclass(frozen=True)
class GraphArithConfig:
    n_nodes: int = 32
    n_leaves: int = 6
    max_fan_in: int = 3
    max_depth: int = 6
    modulus: int = 23
    ops: tuple[str, ...] = ("+",)
    name_pool: int = 128

    def __post_init__(self):
        object.__setattr__(self, "ops", tuple(self.ops))
        if not 1 <= self.n_leaves <= self.n_nodes:
            raise ValueError(f"n_leaves={self.n_leaves} must be in 1..n_nodes={self.n_nodes}")
        if self.n_nodes > self.name_pool:
            raise ValueError(f"n_nodes={self.n_nodes} exceeds name_pool={self.name_pool}")
        if self.max_fan_in < 1 or self.max_depth < 1 or self.modulus < 2:
            raise ValueError("max_fan_in, max_depth must be >= 1 and modulus >= 2")
        bad = [o for o in self.ops if o not in OPS]
        if bad or not self.ops:
            raise ValueError(f"ops {self.ops} must be a non-empty subset of {OPS}")


@dataclass(frozen=True)
class Equation:
    """``operands[0] ops[0] operands[1] ... = target``, or ``literal = target`` for a leaf."""

    target: int
    operands: tuple[int, ...] = ()
    ops: tuple[str, ...] = ()
    literal: int | None = None

    @property
    def is_leaf(self) -> bool:
        return self.literal is not None


@dataclass(frozen=True)
class Problem:
    equations: tuple[Equation, ...]
    modulus: int
    values: tuple[int, ...] = field(default=())  # ground truth per equation (from ``solve``)
    depths: tuple[int, ...] = field(default=())  # graph depth per equation

    @property
    def depth(self) -> int:
        return max(self.depths)

    @property
    def n_nodes(self) -> int:
        return len(self.equations)

    def value_of(self, name: int) -> int:
        return self.values[[e.target for e in self.equations].index(name)]


def solve(equations: tuple[Equation, ...], modulus: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Exact values and depths of every equation, in order (equations are topological)."""
    value: dict[int, int] = {}
    depth: dict[int, int] = {}
    for eq in equations:
        if eq.is_leaf:
            value[eq.target], depth[eq.target] = eq.literal % modulus, 0
            continue
        acc = value[eq.operands[0]]
        for op, name in zip(eq.ops, eq.operands[1:]):
            acc = apply_op(op, acc, value[name], modulus)
        value[eq.target] = acc
        depth[eq.target] = 1 + max(depth[n] for n in eq.operands)
    return tuple(value[e.target] for e in equations), tuple(depth[e.target] for e in equations)


def make_problem(equations: tuple[Equation, ...], modulus: int) -> Problem:
    values, depths = solve(equations, modulus)
    return Problem(tuple(equations), modulus, values, depths)


def sample(config: GraphArithConfig, n: int, seed: int | np.random.Generator) -> list[Problem]:
    """``n`` random problems; the same seed gives the same problems."""
    rng = np.random.default_rng(seed)
    return [_sample_one(config, rng) for _ in range(n)]


def _sample_one(c: GraphArithConfig, rng: np.random.Generator) -> Problem:
    names = rng.choice(c.name_pool, size=c.n_nodes, replace=False).tolist()
    depth = np.zeros(c.n_nodes, dtype=np.int64)
    equations = []
    for i in range(c.n_nodes):
        if i < c.n_leaves:
            equations.append(Equation(names[i], literal=int(rng.integers(c.modulus))))
            continue
        eligible = np.flatnonzero(depth[:i] < c.max_depth)
        k = min(int(rng.integers(1, c.max_fan_in + 1)), len(eligible))
        parents = rng.choice(eligible, size=k, replace=False)  # random order = fold order
        depth[i] = 1 + depth[parents].max()
        ops = tuple(c.ops[j] for j in rng.integers(len(c.ops), size=k - 1))
        equations.append(Equation(names[i], tuple(names[p] for p in parents), ops))
    return make_problem(tuple(equations), c.modulus)


# ----------------------------------------------------------------- text format
def format_problem(problem: Problem) -> str:
    """Human-readable text: ``20 = x_7; x_7 + x_1 = x_23``."""
    parts = []
    for eq in problem.equations:
        if eq.is_leaf:
            lhs = str(eq.literal)
        else:
            lhs = f"x_{eq.operands[0]}" + "".join(f" {o} x_{n}" for o, n in zip(eq.ops, eq.operands[1:]))
        parts.append(f"{lhs} = x_{eq.target}")
    return "; ".join(parts)


def __getattr__(name: str):
    """``parse`` (text -> ``Problem``, with its error messages) lives in ``graph_arith_parse``; it is
    imported on first use, so ``ga.parse`` works without a circular import."""
    if name == "parse":
        from .graph_arith_parse import parse

        return parse
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------- tokenization
def n_tokens(problem: Problem) -> int:
    """Length of the factored token sequence (separators between equations)."""
    return sum(3 if e.is_leaf else 2 * len(e.operands) + 1 for e in problem.equations) + len(problem.equations) - 1


@dataclass
class Encoded:
    """A problem as factored tokens plus its exact algorithmic trace under one scheme.

    All arrays have length L (tokens). ``factors[:, 3]`` is the initial value factor
    (literal at numbers, EMPTY at variable slots, N/A elsewhere).
    """

    factors: np.ndarray  # [L, 4] int64: syntax, variable, op, value at step 0
    answer: np.ndarray  # [L] value factor once solved (equals factors[:, 3] off slots)
    slot: np.ndarray  # [L] bool: a value slot this scheme fills
    fill_step: np.ndarray  # [L] int: step after which a slot holds its value (0 off slots)
    deps: np.ndarray  # [L, 3] int: slots a slot reads (-1 = none); filled when all are
    role: np.ndarray  # [L] ROLE_*
    depth: np.ndarray  # [L] depth of the variable a token names (-1 for other tokens)
    equation: np.ndarray  # [L] index of the equation a token belongs to (-1 for separators)
    scheme: str = "one_hop"

    @property
    def steps_needed(self) -> int:
        return int(self.fill_step.max())

    def state(self, step: int) -> np.ndarray:
        """Value factor after ``step`` steps of the exact algorithm: [L]."""
        filled = self.slot & (self.fill_step <= step)
        return np.where(filled, self.answer, self.factors[:, 3])

    def solved(self) -> np.ndarray:
        """The fully solved factored state: [L, 4]."""
        out = self.factors.copy()
        out[:, 3] = self.state(self.steps_needed)
        return out


def steps_needed(depth: int, scheme: str) -> int:
    """Recurrence steps the exact algorithm needs for a graph of this depth."""
    return depth + 1 if scheme == "paper" else 2 * depth + 1


def encode(problem: Problem, scheme: str = "one_hop", name_pool: int = 128) -> Encoded:
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}; allowed: {SCHEMES}")
    p = problem.modulus
    na_var, na_op, na_val, empty = name_pool, op_na(), value_na(p), value_empty(p)
    rows, answer, role, depth, eq_index = [], [], [], [], []
    define_pos: dict[int, int] = {}
    operand_pos: list[list[int]] = []
    var_depth = {e.target: d for e, d in zip(problem.equations, problem.depths)}
    var_value = {e.target: v for e, v in zip(problem.equations, problem.values)}

    def add(syn, var, op, val, ans, rl, dp, ei):
        rows.append((syn, var, op, val))
        answer.append(ans)
        role.append(rl)
        depth.append(dp)
        eq_index.append(ei)
        return len(rows) - 1

    for i, eq in enumerate(problem.equations):
        if i:
            add(SEP, na_var, na_op, na_val, na_val, ROLE_OTHER, -1, -1)
        ops_here = []
        if eq.is_leaf:
            add(NUM, na_var, na_op, eq.literal, eq.literal, ROLE_LITERAL, -1, i)
        else:
            for j, name in enumerate(eq.operands):
                if j:
                    add(OP, na_var, OPS.index(eq.ops[j - 1]), na_val, na_val, ROLE_OTHER, -1, i)
                ops_here.append(add(VAR, name, na_op, empty, var_value[name], ROLE_OPERAND, var_depth[name], i))
        add(EQ, na_var, na_op, na_val, na_val, ROLE_OTHER, -1, i)
        define_pos[eq.target] = add(VAR, eq.target, na_op, empty, var_value[eq.target], ROLE_DEFINE, var_depth[eq.target], i)
        operand_pos.append(ops_here)

    factors = np.asarray(rows, dtype=np.int64).reshape(-1, 4)
    role_a = np.asarray(role)
    answer_a = np.asarray(answer, dtype=np.int64)
    deps = np.full((len(rows), 3), -1, dtype=np.int64)
    slot = role_a == ROLE_DEFINE
    for i, eq in enumerate(problem.equations):
        d = define_pos[eq.target]
        if eq.is_leaf:
            continue
        sources = operand_pos[i] if scheme == "one_hop" else [define_pos[n] for n in eq.operands]
        deps[d, : len(sources)] = sources
        if scheme == "one_hop":
            for pos, name in zip(operand_pos[i], eq.operands):
                deps[pos, 0] = define_pos[name]
    if scheme == "one_hop":
        slot = slot | (role_a == ROLE_OPERAND)
    else:  # operand slots never receive a value: their answer is EMPTY
        answer_a = np.where(role_a == ROLE_OPERAND, empty, answer_a)
    fill_step = _fill_steps(slot, deps)
    return Encoded(factors, answer_a, slot, fill_step, deps, role_a, np.asarray(depth), np.asarray(eq_index), scheme)


def _fill_steps(slot: np.ndarray, deps: np.ndarray) -> np.ndarray:
    """Step at which each slot is filled: 1 + max over its dependencies (0 off slots)."""
    fill = np.where(slot, -1, 0)
    while (fill < 0).any():
        known = fill >= 0
        dep_known = np.where(deps >= 0, known[np.maximum(deps, 0)], True).all(axis=1)
        dep_step = np.where(deps >= 0, fill[np.maximum(deps, 0)], 0).max(axis=1)
        ready = (fill < 0) & dep_known
        if not ready.any():
            raise ValueError("dependency cycle in encoded problem")
        fill = np.where(ready, dep_step + 1, fill)
    return fill


def next_state(
    values: np.ndarray, filled: np.ndarray, answer: np.ndarray, slot: np.ndarray, deps: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One exact step from any partly filled state; arrays may carry leading batch dims.

    ``values`` [..., L] value factor; ``filled`` [..., L] slots holding their true value;
    ``answer``, ``slot``, ``deps`` [..., L(, 3)] as in ``Encoded``. A filled slot stays
    filled; an empty slot is filled when all its dependencies are. Returns the new
    (values, filled).
    """
    idx = np.maximum(deps, 0).reshape(*deps.shape[:-2], -1)
    dep_filled = np.take_along_axis(filled, idx, axis=-1).reshape(deps.shape)
    dep_ok = np.where(deps >= 0, dep_filled, True).all(axis=-1)
    new_filled = filled | (slot & dep_ok)
    return np.where(new_filled & slot, answer, values), new_filled


def describe_token(enc: Encoded, i: int, modulus: int) -> str:
    """A readable token label, e.g. ``x_7`` or ``+`` (for tables and plots)."""
    syn, var, op, val = enc.factors[i]
    if syn == VAR:
        return f"x_{var}"
    if syn == NUM:
        return str(val)
    if syn == OP:
        return OPS[op]
    return {EQ: "=", SEP: ";", PAD: "·"}[int(syn)]
