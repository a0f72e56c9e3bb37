"""The text format of graph-arithmetic problems read back: ``parse(text) -> Problem``.

    20 = x_7; 3 = x_1; x_7 + x_1 = x_23; x_23 = x_5

Reached as ``graph_arith.parse`` (``format_problem`` there writes the format). Every broken rule
is a ``ValueError`` naming the character offset, the rule and what is allowed, and reading is
linear in the text: a whole well-formed equation is matched at once, and a token machine runs
only where that fails, to name the position.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .graph_arith import Equation, Problem, make_problem, n_tokens
from .text import show

# Token kinds, tried in order. ``sep`` swallows a whole run of separators and blanks (empty
# equations are skipped) and ``bad`` takes any other single character, so the matches tile
# the text without gaps and without backtracking: lexing is linear in the text.
_TOKEN = re.compile(
    r"(?P<space>[ \t\r]+)|(?P<sep>[;\n][;\n \t\r]*)|(?P<var>x_[0-9]+)|(?P<num>[0-9]+)|(?P<op>[+\-*])|(?P<eq>=)"
    r"|(?P<bad>.)",
    re.DOTALL,
)
_BAD_RUN = re.compile(r"[^ \t\r\n;]{1,24}")  # the unknown token as shown in a message (bounded)
_ALLOWED = "allowed: variables x_<n>, integers (digits 0-9), + - *, =, and ; or newline between equations"
_SHAPES = "equations look like '<int> = x_i' or 'x_a + x_b ... = x_i'"

# parser states: what the next token of the current equation may be
_EXPECTED = {
    "start": "an integer or a variable x_<n>",
    "literal": "'='",
    "operand": "an operator + - * or '='",
    "op": "a variable x_<n>",
    "target": "the defined variable x_<n>",
    "done": "';' or a newline",
}
_NEXT = {  # (state, token kind) -> next state
    ("start", "num"): "literal", ("start", "var"): "operand", ("literal", "eq"): "target",
    ("operand", "op"): "op", ("operand", "eq"): "target", ("op", "var"): "operand", ("target", "var"): "done",
}
_IN_LHS = ("literal", "operand", "op")  # errors here are about the left-hand side


def _below(digits: str, bound: int) -> int | None:
    """``int(digits)`` if it is below ``bound``, else None; never converts a huge string."""
    if len(digits) < 10:  # the common case, cheap
        value = int(digits)
        return value if value < bound else None
    digits = digits.lstrip("0") or "0"
    if len(digits) > len(str(bound)):
        return None
    value = int(digits)
    return value if value < bound else None


def _unknown_token(text: str, pos: int) -> ValueError:
    run = _BAD_RUN.match(text, pos)
    shown = run.group(0) if run else text[pos]
    note = next((f" (character {pos + i} is the non-ASCII digit {c!r}; write numbers with 0-9)"
                 for i, c in enumerate(shown) if c.isdigit() and not c.isascii()), "")
    return ValueError(f"character {pos}: unknown token {show(shown)}{note}; {_ALLOWED}")


def _describe(kind: str, tok: str) -> str:
    if kind == "sep":
        return "the end of the equation (';' or newline)"
    if kind == "end":
        return "the end of the text"
    return {"var": "variable ", "num": "integer ", "op": "operator ", "eq": ""}[kind] + show(tok)


def _malformed(state: str, kind: str, tok: str, pos: int) -> ValueError:
    part = "left-hand side" if state in _IN_LHS else "equation"
    return ValueError(f"character {pos}: malformed {part}: found {_describe(kind, tok)} where "
                      f"{_EXPECTED[state]} was expected; {_SHAPES}")


@dataclass
class _Draft:
    """One equation's tokens as (text, character offset), before any value is checked."""

    literal: tuple[str, int] | None = None
    operands: list[tuple[str, int]] = field(default_factory=list)
    ops: list[str] = field(default_factory=list)
    target: tuple[str, int] = ("", 0)

    def add_operand(self, tok: str, pos: int, max_fan_in: int) -> None:
        self.operands.append((tok, pos))
        if len(self.operands) > max_fan_in:  # checked as read, so a huge left-hand side stops early
            raise ValueError(f"character {pos}: more than {max_fan_in} operands in one equation; "
                             f"at most {max_fan_in} allowed")


# A whole well-formed equation and the separators after it, in one match; the same language
# as the token machine below (tokens are greedy and need a non-token between them), which
# runs only where this fails, to name the position and the rule. At most 32 operands here,
# so a huge left-hand side goes straight to the machine, which stops at max_fan_in.
_BLANKS = re.compile(r"[;\n \t\r]*")
_EQUATION = re.compile(
    r"(?:(?P<literal>[0-9]+)|(?P<lhs>x_[0-9]+(?:[ \t\r]*[+\-*][ \t\r]*x_[0-9]+){0,31}))"
    r"[ \t\r]*=[ \t\r]*(?P<target>x_[0-9]+)[ \t\r]*(?:[;\n][;\n \t\r]*|\Z)"
)
_LHS_TOKEN = re.compile(r"x_[0-9]+|[+\-*]")


def _matched(m: re.Match, max_fan_in: int) -> _Draft:
    """The draft of an equation ``_EQUATION`` matched."""
    draft = _Draft(target=(m.group("target"), m.start("target")))
    if m.group("literal") is not None:
        draft.literal = (m.group("literal"), m.start("literal"))
        return draft
    for t in _LHS_TOKEN.finditer(m.string, m.start("lhs"), m.end("lhs")):
        if t.group()[0] == "x":
            draft.add_operand(t.group(), t.start(), max_fan_in)
        else:
            draft.ops.append(t.group())
    return draft


def _tokenwise(text: str, pos: int, max_fan_in: int) -> tuple[_Draft, int]:
    """Read one equation from ``pos`` token by token; raise at the first broken rule.

    Returns the draft and where the next equation starts.
    """
    draft, state = _Draft(), "start"
    for m in _TOKEN.finditer(text, pos):
        kind, tok, at = m.lastgroup, m.group(), m.start()
        if kind == "space":
            continue
        if kind == "bad":
            raise _unknown_token(text, at)
        if kind == "sep" and state == "done":
            return draft, m.end()
        nxt = _NEXT.get((state, kind))
        if nxt is None:
            raise _malformed(state, kind, tok, at)
        if kind == "num":
            draft.literal = (tok, at)
        elif kind == "op":
            draft.ops.append(tok)
        elif nxt == "operand":
            draft.add_operand(tok, at, max_fan_in)
        elif kind == "var":
            draft.target = (tok, at)
        state = nxt
    if state != "done":
        raise _malformed(state, "end", "", len(text))
    return draft, len(text)


def _read(text: str, modulus: int, name_pool: int, max_fan_in: int) -> list[tuple[Equation, list[tuple[int, int]]]]:
    """Equations in text order with their operands' (name, offset); syntax and per-token rules.

    Stops at the first broken rule, so the work is linear in the text however long it is.
    """
    out: list[tuple[Equation, list[tuple[int, int]]]] = []
    where: dict[int, int] = {}  # variable -> offset of its definition
    pos = _BLANKS.match(text).end()
    while pos < len(text):
        m = _EQUATION.match(text, pos)
        if m:
            draft, pos = _matched(m, max_fan_in), m.end()
        else:
            draft, pos = _tokenwise(text, pos, max_fan_in)
            pos = _BLANKS.match(text, pos).end()
        out.append(_checked(draft, where, modulus, name_pool))
    return out


def _checked(draft: _Draft, where: dict[int, int], modulus: int, name_pool: int
             ) -> tuple[Equation, list[tuple[int, int]]]:
    """Values and names of a well-formed equation, in text order; records its definition."""
    literal = _literal(*draft.literal, modulus) if draft.literal else None
    operands = [(_variable(tok, pos, name_pool), pos) for tok, pos in draft.operands]
    target = _variable(*draft.target, name_pool)
    if target in where:
        raise ValueError(f"character {draft.target[1]}: x_{target} is defined twice (first at character "
                         f"{where[target]}); each variable is defined once")
    where[target] = draft.target[1]
    if literal is not None:
        return Equation(target, literal=literal), []
    return Equation(target, tuple(n for n, _ in operands), tuple(draft.ops)), operands


def _literal(tok: str, pos: int, modulus: int) -> int:
    value = _below(tok, modulus)
    if value is None:
        raise ValueError(f"character {pos}: value {show(tok)} is outside Z_{modulus} (allowed 0..{modulus - 1})")
    return value


def _variable(tok: str, pos: int, name_pool: int) -> int:
    index = _below(tok[2:], name_pool)
    if index is None:
        raise ValueError(f"character {pos}: unknown variable {show(tok)}; allowed x_0..x_{name_pool - 1}")
    return index


def _check_order(read: list[tuple[Equation, list[tuple[int, int]]]]) -> None:
    """Every operand is defined, by an earlier equation (topological order, no cycle)."""
    equations = [eq for eq, _ in read]
    defined_at = {eq.target: i for i, eq in enumerate(equations)}
    for i, (eq, operands) in enumerate(read):
        for name, pos in operands:
            if name not in defined_at:
                raise ValueError(f"character {pos}: x_{name} is used but never defined; "
                                 "every operand needs its own equation")
            if defined_at[name] < i:
                continue
            cycle = _find_cycle(equations, eq.target)
            if cycle:
                path = " -> ".join(f"x_{n}" for n in cycle)
                raise ValueError(f"character {pos}: cycle {path} (each uses the next); the graph must be acyclic")
            raise ValueError(f"character {pos}: x_{name} is used before it is defined (defined in equation "
                             f"{defined_at[name] + 1}); equations must be in topological order")


def parse(
    text: str,
    modulus: int = 23,
    name_pool: int = 128,
    max_fan_in: int = 3,
    max_tokens: int | None = None,
) -> Problem:
    """Parse the text format back into a ``Problem`` (values and depths solved exactly).

    Rules: equations are separated by ``;`` or a newline (empty equations, e.g. a trailing
    ``;``, are skipped); spaces, tabs and carriage returns between tokens are ignored; an
    equation is ``<int> = x_i`` or ``x_a op x_b op ... = x_i`` with op one of ``+ - *`` and
    at most ``max_fan_in`` operands; integers and variable indices are written with the
    ASCII digits 0-9 (leading zeros allowed), a value lies in 0..modulus-1 and a variable
    in x_0..x_{name_pool-1}; each variable is defined once, before any use (topological
    order, so no cycles); the problem has at least one equation and, when ``max_tokens``
    is given, at most that many factored tokens. Anything else (other characters, non-ASCII
    digits, control characters) is an unknown token.

    A broken rule raises ``ValueError`` naming the character offset, the rule and what is
    allowed. Linear time in ``len(text)``: reading stops at the first broken rule.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str; got {type(text).__name__}")
    read = _read(text, modulus, name_pool, max_fan_in)
    if not read:
        raise ValueError("character 0: empty problem; expected equations like '20 = x_7; x_7 + x_3 = x_9'")
    _check_order(read)
    problem = make_problem(tuple(eq for eq, _ in read), modulus)
    if max_tokens is not None and n_tokens(problem) > max_tokens:
        raise ValueError(
            f"character {len(text)}: the problem has {n_tokens(problem)} tokens; "
            f"the model supports at most {max_tokens}"
        )
    return problem


def _find_cycle(equations: list[Equation], start: int) -> list[int] | None:
    """A cycle through ``start`` (each variable uses the next), or None; linear time."""
    parents = {e.target: e.operands for e in equations}
    came_from: dict[int, int] = {}
    stack = [start]
    while stack:
        node = stack.pop()
        for p in parents.get(node, ()):
            if p == start:
                path = [node]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return path[::-1] + [start]
            if p not in came_from:
                came_from[p] = node
                stack.append(p)
    return None
