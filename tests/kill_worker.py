"""Trains ToyLoop with a checkpoint after every step, resuming whatever ``out`` holds.

Run as ``python -m tests.kill_worker <out> <steps>``; the kill test stops it at random moments.
"""

import sys

import torch

from tests.toy import ToyLoop, toy_batch
from workbench.train import TrainConfig, TrainSpec, train

out, steps = sys.argv[1], int(sys.argv[2])
torch.manual_seed(0)
train(TrainSpec(ToyLoop(d=32), lambda rng, step: toy_batch(rng, step, d=32)),
      TrainConfig(steps=steps, lr=1e-2, warmup=2, out=out, resume=True, progress=False, checkpoint_every=1,
                  eval_every=10_000, threads=1))
