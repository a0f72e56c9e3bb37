"""The shipped reasoners load offline and meet their cards on freshly generated problems."""

import math

import pytest
import torch

import models
from models.reasoner import Reasoner
from models.reasoner_eval import evaluate, ood_task
from workbench.tasks import graph_arith as ga

SHIPPED = [n for n in models.zoo_names() if n == "reasoner" or n.startswith("reasoner-")]


def _task(name: str) -> ga.GraphArithConfig:
    task = dict(models.load(name).cfg.task)
    task["ops"] = tuple(task["ops"])
    return ga.GraphArithConfig(**task)


def test_the_zoo_ships_the_full_method_its_ablations_and_a_baseline():
    assert {"reasoner", "reasoner-no-error-correction", "reasoner-continuous", "reasoner-e2e-recurrent"} <= set(SHIPPED)
    listing = models.available()
    assert all(name in listing for name in SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_reasoner_meets_its_card_at_the_training_size(name):
    torch.set_num_threads(1)
    model = models.load(name)
    assert isinstance(model, Reasoner)
    task = _task(name)
    card = models.metrics(name)["headline"]
    assert card["n_nodes"] == task.n_nodes
    # 128 fresh problems from a seed no card used: within three standard errors of the card
    n, p = 128, card["value"]
    solved = evaluate(model, ga.sample(task, n, 90210)).summary()["fully_solved"]
    margin = max(0.03, 3 * math.sqrt(p * (1 - p) / n))
    assert solved >= p - margin, f"{name}: fully solved {solved:.3f}, card {p:.3f}"


@pytest.mark.parametrize("name, n", [("reasoner", 48), ("reasoner-deep", 48),
                                     pytest.param("reasoner-z23", 24, marks=pytest.mark.slow)])
def test_full_method_generalizes_to_four_times_the_training_size(name, n):
    torch.set_num_threads(1)
    model = models.load(name)
    task = _task(name)
    big = ood_task(task, 4 * task.n_nodes)
    table = models.metrics(name)["ood"]
    card = next(r["fully_solved"] for r in table if r["n_nodes"] == big.n_nodes)
    solved = evaluate(model, ga.sample(big, n, 90211)).summary()["fully_solved"]
    margin = max(0.15, 3 * math.sqrt(card * (1 - card) / n))
    assert solved >= card - margin, f"fully solved {solved:.3f} at N={big.n_nodes}, card {card:.3f}"


def test_the_solved_by_step_curve_agrees_with_the_final_state_and_the_exact_algorithm():
    import numpy as np

    model = models.load("reasoner")
    task = ga.GraphArithConfig(**model.cfg.task)
    problems = ga.sample(ood_task(task, 24), 48, np.random.default_rng(5))
    ev = evaluate(model, problems)
    curve = ev.solved_by_step()
    assert list(curve.step) == list(range(int(ev.steps.max())))
    assert (np.diff(curve.fully_solved) >= 0).all()
    assert curve.fully_solved.iloc[-1] == pytest.approx(ev.fully_solved.mean())
    # a problem is never solved before the exact algorithm could have filled its deepest node
    for p, s in zip(problems, ev.solved_step):
        if s >= 0:
            assert s + 1 >= ga.steps_needed(p.depth, model.cfg.scheme)
    assert ev.per_position.n.sum() == sum(len(p.equations) for p in problems)
