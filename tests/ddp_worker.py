"""Run under torchrun: trains ToyLoop with the shared trainer, each rank saves its weights."""

import os
import sys

import torch

from tests.toy import ToyLoop, toy_batch
from workbench.train import TrainConfig, TrainSpec, train

out = sys.argv[1]
torch.manual_seed(0)
model = ToyLoop()
train(TrainSpec(model, toy_batch), TrainConfig(steps=15, lr=1e-2, warmup=2, out=out, progress=False,
                                                checkpoint_every=100, threads=1))
rank = int(os.environ["RANK"])
assert not torch.distributed.is_initialized()  # train() leaves no process group behind
torch.save(model.state_dict(), f"{out}/rank{rank}.pt")
