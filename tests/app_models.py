"""Tiny, freshly initialised checkpoints of every model family the explorer shows, and which
pages the zoo can open by default.

The explorer's tests point its pages at these (``?model=<folder>``) so they run in seconds
and do not depend on what the zoo holds.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from workbench import checkpoints


def reasoner(folder: Path) -> Path:
    from models.reasoner import Reasoner, ReasonerConfig
    from workbench.tasks import graph_arith as ga

    task = ga.GraphArithConfig(n_nodes=8, n_leaves=3, max_depth=2)
    torch.manual_seed(0)
    model = Reasoner(ReasonerConfig(d_model=32, n_heads=4, d_mlp=64, max_steps=16, task=asdict(task)))
    ood = [{"n_nodes": n, "fully_solved": 1.0 / n, "node_acc": 0.5, "max_steps": 7, "n": 8} for n in (4, 8, 16)]
    checkpoints.save(folder, model, metrics={"headline": {"metric": "fully_solved", "value": 0.0}, "ood": ood})
    return folder


def act(folder: Path) -> Path:
    from models.act import ACT, ACTConfig

    torch.manual_seed(0)
    model = ACT(ACTConfig(input_size=6, hidden=16, cell="gru", max_ponder=6, task_name="parity", task={"size": 6}))
    checkpoints.save(folder, model, metrics={"headline": {"metric": "error", "value": 0.5}})
    return folder


def warp(folder: Path) -> Path:
    from models.warp import Warp, WarpConfig

    torch.manual_seed(0)
    model = Warp(WarpConfig(d_in=2, root_width=8, root_depth=1, physics="msd", seq_len=32,
                            task={"system": "msd", "length": 32, "context": 8}))
    checkpoints.save(folder, model, metrics={"headline": {"metric": "forecast_mse_x1e-2", "value": 1.0}})
    return folder


def all_families(root: Path) -> dict[str, Path]:
    """Save one tiny checkpoint per family under ``root``: {family: folder}."""
    return {"reasoner": reasoner(root / "reasoner"), "act": act(root / "act"), "warp": warp(root / "warp"),
            "warp-digits": warp_digits(root / "warp-digits")}


def warp_digits(folder: Path) -> Path:
    from models.warp import Warp, WarpConfig

    torch.manual_seed(0)
    model = Warp(WarpConfig(d_in=1, n_classes=10, root_width=8, root_depth=1, init="learned", seq_len=64,
                            task={"test_fraction": 0.25, "split_seed": 0, "context": 32}))
    checkpoints.save(folder, model, metrics={"headline": {"metric": "accuracy", "value": 0.1}})
    return folder


def shipped(page: str) -> bool:
    """Does the zoo hold a model the page opens on by default?"""
    from apps import zoo

    families = {"home": (), "reasoner": ("reasoner",), "act": ("act",), "warp": ("warp",), "gain": ("gain",)}
    wanted = families.get(page, zoo.ANALYSIS_FAMILIES)
    return not wanted or bool(zoo.names_of(*wanted))
