"""A tiny looped model for testing the hook layer: s_{t+1} = tanh(W s_t + b + x)."""

import torch
from torch import nn

from workbench.hooks import HookedRecurrentModule, HookPoint, hook_list


class StepHooks(nn.Module):
    def __init__(self):
        super().__init__()
        self.hook_pre = HookPoint()
        self.hook_state = HookPoint()


class ToyLoop(HookedRecurrentModule):
    def __init__(self, d: int = 4, max_steps: int = 5):
        super().__init__()
        self.lin = nn.Linear(d, d)
        self.steps = hook_list(max_steps, StepHooks)
        self.setup()

    def forward(self, x: torch.Tensor, steps: int = 3, fail_at: int | None = None) -> torch.Tensor:
        self.check_steps(steps)
        s = torch.zeros_like(x)
        for t in range(steps):
            if t == fail_at:
                raise RuntimeError("boom")
            pre = self.steps[t].hook_pre(self.lin(s) + x)
            s = self.steps[t].hook_state(torch.tanh(pre))
        return s
