"""A tiny looped model for testing the hook layer and the trainer: s_{t+1} = tanh(W s_t + b + x)."""

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
        self.d, self.max_steps = d, max_steps
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

    # --- what the trainer needs
    def loss(self, batch: dict) -> tuple[torch.Tensor, dict]:
        err = ((self(batch["x"]) - batch["y"]) ** 2).mean() * batch.get("scale", 1.0)
        return err, {"mse": err.item()}

    def config_dict(self) -> dict:
        return {"d": self.d, "max_steps": self.max_steps}

    @classmethod
    def from_config(cls, config: dict) -> "ToyLoop":
        return cls(**config)


def toy_batch(rng, step: int, d: int = 4, nan_at: int | None = None) -> dict:
    x = torch.from_numpy(rng.normal(size=(16, d))).float()
    batch = {"x": x, "y": torch.tanh(x.flip(-1))}
    if step == nan_at:
        batch["scale"] = float("nan")
    return batch
