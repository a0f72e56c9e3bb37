from dataclasses import asdict

import pytest
import torch

from models.reasoner import Reasoner, ReasonerConfig
from models.reasoner_data import tokens
from tests.toy import ToyLoop
from workbench.hooks import UnknownHookError
from workbench.sites import Site, Sites, component, loop_indices, resolve, site_axes
from workbench.tasks import graph_arith as ga

TASK = ga.GraphArithConfig(n_nodes=6, max_depth=2)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run():
    torch.manual_seed(0)
    model = Reasoner(ReasonerConfig(d_model=16, n_heads=2, d_mlp=32, max_steps=6, task=asdict(TASK))).eval()
    x = tokens(ga.sample(TASK, 2, 0), model.cfg)
    _, cache = model.run_with_cache(x, steps=3)
    return model, x, {k: tuple(v.shape) for k, v in cache.items()}


def test_loop_indices_component_and_axes():
    assert loop_indices("steps.3.blocks.1.attn.hook_z") == {"steps": 3, "blocks": 1}
    assert loop_indices("time.2.ponder.0.hook_halt") == {"time": 2, "ponder": 0}
    assert component("steps.3.blocks.1.attn.hook_z") == "attn.hook_z"
    assert component("time.4.root.layers.1.hook_pre") == "root.hook_pre"
    assert site_axes("steps.0.blocks.0.attn.hook_pattern", 4) == (2, 1)  # [batch, head, query, key]
    assert site_axes("steps.0.blocks.0.attn.hook_z", 4) == (1, 2)  # [batch, pos, head, d_head]
    assert site_axes("steps.0.hook_input", 3) == (1, None)
    assert site_axes("time.0.hook_state", 2) == (None, None)  # an RNN state has no position axis


def test_site_index_selects_position_and_head():
    act = torch.arange(2 * 5 * 3 * 4).reshape(2, 5, 3, 4)
    s = Site("steps.1.blocks.0.attn.hook_z", pos=2, head=1)
    assert torch.equal(act[s.index(act.shape)], act[:, 2, 1])
    pat = torch.arange(2 * 3 * 5 * 5).reshape(2, 3, 5, 5)
    s = Site("steps.1.blocks.0.attn.hook_pattern", pos=4, head=2)
    assert torch.equal(pat[s.index(pat.shape)], pat[:, 2, 4])
    assert s.row() == {"site": "steps.1.blocks.0.attn.hook_pattern[pos=4, head=2]",
                       "hook": "steps.1.blocks.0.attn.hook_pattern", "component": "attn.hook_pattern",
                       "step": 1, "layer": 0, "pos": 4, "head": 2}


def test_grid_of_steps_layers_and_positions(run):
    model, x, shapes = run
    L = x.shape[1]
    sites = Sites("steps.*.blocks.*.hook_resid_pre", positions="each").resolve(shapes, model)
    assert len(sites) == 3 * 2 * L  # steps x layers x positions, only steps that ran
    assert sites[0] == Site("steps.0.blocks.0.hook_resid_pre", 0) and sites[-1].loops == {"steps": 2, "blocks": 1}
    some = Sites("steps.*.blocks.*.hook_resid_pre", positions=[1, 3], steps=[2], blocks=[1]).resolve(shapes)
    assert some == [Site("steps.2.blocks.1.hook_resid_pre", 1), Site("steps.2.blocks.1.hook_resid_pre", 3)]
    heads = Sites("steps.1.blocks.*.attn.hook_z", heads="each").resolve(shapes)
    assert [(s.loops["blocks"], s.head) for s in heads] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    filt = Sites(lambda n: n.endswith("hook_codes")).resolve(shapes)
    assert [s.name for s in filt] == [f"steps.{t}.bottleneck.hook_codes" for t in range(3)]
    assert resolve("steps.2.hook_input", shapes) == [Site("steps.2.hook_input")]


def test_bad_selections_are_rejected_clearly(run):
    model, x, shapes = run
    with pytest.raises(UnknownHookError, match="closest valid names.*hook_resid_pre"):
        Sites("steps.0.blocks.0.hook_resid_pr").resolve(shapes, model)
    with pytest.raises(ValueError, match="did not fire in this run.*fired from"):
        Sites("steps.5.hook_input").resolve(shapes, model)  # built, but only 3 steps ran
    with pytest.raises(ValueError, match="matches no hook"):
        Sites("steps.*.blocks.*.hook_nothing").resolve(shapes, model)
    with pytest.raises(ValueError, match=r"position \[999\] out of range.*allowed 0\.\."):
        Sites("steps.0.hook_input", positions=[999]).resolve(shapes)
    with pytest.raises(ValueError, match="no head axis"):
        Sites("steps.0.hook_input", heads="each").resolve(shapes)
    with pytest.raises(ValueError, match="allowed: None, 'each'"):
        Sites("steps.0.hook_input", positions="all")
    with pytest.raises(ValueError, match="position 99 is invalid"):
        resolve([Site("steps.0.hook_input", 99)], shapes)
    toy = ToyLoop()
    _, cache = toy.run_with_cache(torch.randn(2, 4), steps=2)
    toy_shapes = {k: tuple(v.shape) for k, v in cache.items()}
    with pytest.raises(ValueError, match="no position axis"):
        Sites("steps.*.hook_state", positions="each").resolve(toy_shapes)
    assert len(Sites("steps.*.hook_state").resolve(toy_shapes)) == 2
