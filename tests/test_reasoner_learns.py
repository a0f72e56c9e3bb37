"""A small reasoner learns the task: multi-operand sums leave chance and rollouts solve problems.

Tiny graphs (8 nodes, depth <= 2, fan-in <= 2) over Z_5 so that the run fits in a few minutes
on the CPU; the same code path trains the shipped models.
"""

from dataclasses import asdict, replace

import numpy as np
import pytest
import torch

from models.reasoner import Reasoner, ReasonerConfig
from models.reasoner_data import training_batch, transition_batch
from models.reasoner_eval import evaluate
from workbench.tasks import graph_arith as ga
from workbench.train import TrainConfig, TrainSpec, train


@pytest.mark.slow
def test_tiny_reasoner_learns_sums_and_solves_problems(tmp_path):
    task = ga.GraphArithConfig(n_nodes=8, max_depth=2, modulus=5, name_pool=16, max_fan_in=2)
    torch.manual_seed(0)
    cfg = ReasonerConfig(d_model=64, n_heads=8, d_mlp=256, causal=True, max_steps=8, modulus=5, name_pool=16,
                         task=asdict(task))
    model = Reasoner(cfg)
    # measured without error-correction noise: a corrupted operand makes its sum unknowable
    fresh = transition_batch(replace(cfg, error_prob=0.0), task, 256, np.random.default_rng(123), 8)
    with torch.no_grad():
        before = model.eval().transition_loss(fresh)[1]["acc_new_sum"]
    spec = TrainSpec(model, lambda rng, step: training_batch(cfg, task, 64, rng, 8))
    train(spec, TrainConfig(steps=1000, lr=5e-3, weight_decay=0.1, warmup=50, out=str(tmp_path), progress=False,
                            threads=1, checkpoint_every=10**6))
    with torch.no_grad():
        after = model.eval().transition_loss(fresh)[1]["acc_new_sum"]
    chance = 1 / task.modulus
    assert before < 2 * chance
    assert after > 0.8, f"new multi-operand sums right {after:.2f} (chance {chance:.2f})"
    solved = evaluate(model, ga.sample(task, 128, 7)).summary()["fully_solved"]
    assert solved > 0.7, f"fully solved {solved:.2f}"
