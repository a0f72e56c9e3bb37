"""The metric of many patched copies at once (``workbench.runs.metric_per_copy``): one vectorised
call where the metric allows it, one call per copy where it does not, the same values either way."""

from dataclasses import dataclass

import numpy as np
import pytest
import torch

import models
from probes.act import patching_setup
from tests.test_warp import VARIANTS, inputs, small
from workbench.patching import patch
from workbench.runs import metric_per_copy
from workbench.sites import Sites


@dataclass
class Out:
    logits: torch.Tensor  # [rows, 3]
    steps: torch.Tensor  # [rows] long
    scale: torch.Tensor  # [3]: not batch-first, shared by every copy


def by_hand(metric, out: Out, first: int, k: int, B: int) -> torch.Tensor:
    """The oracle: the metric called on each copy's rows, sliced here."""
    rows = lambda a: Out(out.logits[a:a + B], out.steps[a:a + B], out.scale)  # noqa: E731
    return torch.stack([torch.as_tensor(metric(rows(first + j * B))).float() for j in range(k)])


@pytest.fixture
def out() -> Out:
    g = torch.Generator().manual_seed(0)
    n = 2 + 6 * 2  # two rows before the copies (first = 2), then 6 copies of a batch of B = 2
    return Out(torch.randn(n, 3, generator=g), torch.randint(1, 5, (n,), generator=g), torch.tensor([1.0, 2.0, 3.0]))


def test_a_metric_vmap_can_batch_is_called_once_for_every_copy(out):
    calls = []

    def metric(o):  # couples the rows of one copy (its own batch mean), as a per-copy call sees them
        calls.append(1)
        z = o.logits * o.scale
        return (z - z.mean(0)).sum(1) + o.steps.float()

    got = metric_per_copy(metric, out, 6, 2, first=2)
    assert len(calls) == 1
    torch.testing.assert_close(got, by_hand(metric, out, 2, 6, 2), atol=1e-6, rtol=0)
    assert got.shape == (6, 2) and got.dtype == torch.float32


@pytest.mark.parametrize("kind", ["item", "numpy", "branch"])
def test_a_metric_vmap_refuses_is_called_once_per_copy_with_the_same_values(out, kind):
    def metric(o):
        if kind == "item":
            return o.logits[:, 0] * float(o.scale[0].item() + o.steps[0].item())
        if kind == "numpy":
            return np.asarray(o.logits[:, 1].numpy()) * 2
        return o.logits[:, 2] if bool((o.logits[:, 2] > 0).any()) else -o.logits[:, 2]

    got = metric_per_copy(metric, out, 6, 2, first=2)
    torch.testing.assert_close(got, by_hand(metric, out, 2, 6, 2), atol=1e-6, rtol=0)


def test_a_metric_of_the_wrong_shape_gets_the_per_copy_error(out):
    wrong = r"metric must return a tensor of shape \[batch\] = \[2\].*patched run it returned \[\]"
    with pytest.raises(ValueError, match=wrong):
        metric_per_copy(lambda o: o.logits.sum(), out, 6, 2, first=2)
    assert metric_per_copy(lambda o: o.logits[:, 0], out, 0, 2, first=2).shape == (0, 2)


def test_a_grown_warp_run_lays_out_its_own_copies():
    """A WARP run whose batch grew assembles each copy's rows from its record (``row_blocks``): the
    vectorised metric over them equals one call per ``output_rows`` block."""
    model = small(**VARIANTS["phys-msd"])
    x = inputs(model, batch=2, T=12)
    with torch.no_grad():
        out = model(x, join=lambda t: torch.tensor([0, 1]) if t in (3, 7) else None)
    assert len(out) == 6
    target = x[:, 1:]
    metric = lambda o: -((o.mean[:, :-1] - target) ** 2).mean((1, 2))  # noqa: E731
    got = metric_per_copy(metric, out, 2, 2, first=2, n=6)
    expected = torch.stack([metric(out.output_rows(a, a + 2)) for a in (2, 4)]).float()
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match="out of range"):
        out.row_blocks(4, 2, 2)


def test_patch_scores_do_not_depend_on_whether_the_metric_can_be_vectorised():
    model = models.load("act-parity")
    s = patching_setup(model, n=4, seed=0)
    sites = Sites("time.*.ponder.*.hook_state")
    vectorised = patch(model, s.clean, s.corrupted, s.metric, sites)
    per_copy = patch(model, s.clean, s.corrupted, lambda out: s.metric(out).numpy(), sites)
    assert vectorised.meta["joined"] and len(vectorised.df) > 3
    np.testing.assert_allclose(per_copy.df.metric, vectorised.df.metric, atol=1e-6, rtol=0)
    assert list(per_copy.df.hook) == list(vectorised.df.hook)
