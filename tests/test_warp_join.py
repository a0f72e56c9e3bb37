"""Rows that join a recurrent WARP run mid-loop (``Warp.forward(..., join=fn)``, ``models/warp_join.py``):
each copy continues from the row it copied, and its output can be read alone."""

import dataclasses

import pytest
import torch

from models.warp_io import WarpOutput
from tests.test_warp import VARIANTS, inputs, small


@pytest.mark.parametrize("name, kwargs", [("phys-msd", {}), ("x-and-fourier", {"context": 6, "horizon": 14})])
def test_rows_that_join_mid_run_continue_from_the_row_they_copy(name, kwargs):
    """join(t) appends copies of rows at step t; here a hook then moves the copies' theta, and each
    final row must equal a separate plain run of its input with the same change (or none)."""
    model = small(**VARIANTS[name])
    x = inputs(model, batch=2, T=20)
    grows = {5: torch.tensor([0]), 9: torch.tensor([1, 2])}  # row 2 copies row 0 at 5; rows 3, 4 copy 1 and 2 at 9
    seen = []

    def join(t):
        seen.append(t)
        return grows.get(t)

    def bump(act, hook):  # the copy that joined at step 5 (the batch is rows 0..2 then)
        assert act.shape[0] == 3
        return torch.cat([act[:2], act[2:] + 0.1])

    with torch.no_grad():
        got = model.run_with_hooks(x, join=join, fwd_hooks=[("time.5.hook_theta", bump)], **kwargs)
        plain = model(x, **kwargs)
        moved = model.run_with_hooks(x[:1], fwd_hooks=[("time.5.hook_theta", lambda a, hook: a + 0.1)], **kwargs)
    assert seen == list(range(plain.thetas.shape[1]))  # called at the start of every step
    expected = [plain, plain, moved, plain, moved]
    rows = [0, 1, 0, 1, 0]
    for field in ("thetas", "inputs", "mean"):
        value = getattr(got, field)
        assert value.shape[0] == 5
        for r, (run, i) in enumerate(zip(expected, rows)):
            torch.testing.assert_close(value[r], getattr(run, field)[i], atol=1e-9, rtol=0, msg=f"{field} row {r}")
    assert not torch.allclose(got.mean[2], plain.mean[0])  # the change did reach the output
    part = got.output_rows(2, 4)  # rows 2 and 3 alone, as patching reads them
    assert isinstance(part, WarpOutput) and len(got) == 5
    for field in ("thetas", "inputs", "mean"):
        torch.testing.assert_close(getattr(part, field), getattr(got, field)[2:4], atol=0, rtol=0)
    assert part.logits is None and part.steps == plain.steps  # fields the run did not record keep their defaults
    as_dict = dataclasses.asdict(got.output_rows(2, 4))  # read field by field, each gathered when first read
    torch.testing.assert_close(as_dict["thetas"], got.thetas[2:4], atol=0, rtol=0)
    moved_part = dataclasses.replace(part, mean=part.mean + 1)
    torch.testing.assert_close(moved_part.mean, got.mean[2:4] + 1, atol=0, rtol=0)
    torch.testing.assert_close(moved_part.inputs, got.inputs[2:4], atol=0, rtol=0)
    with pytest.raises(ValueError, match=r"rows 4..5 are out of range; allowed 0..4"):
        got.output_rows(4, 6)


def test_join_rejects_what_is_not_rows_of_the_batch():
    from workbench.inputs import InputTypeError

    model = small(**VARIANTS["plain"])
    x = inputs(model, batch=2, T=6)
    with pytest.raises(InputTypeError, match=r"join\(0\) must return None or a 1-d integer tensor"):
        model(x, join=lambda t: [0])
    with pytest.raises(ValueError, match=r"join\(2\) returned rows \[2\]; allowed 0..1"):
        model(x, join=lambda t: torch.tensor([2]) if t == 2 else None)
    with pytest.raises(ValueError, match=r"allowed 0..2"):  # the batch has grown by one at step 1
        model(x, join=lambda t: torch.tensor([0]) if t == 1 else torch.tensor([-1]) if t == 3 else None)
    with pytest.raises(InputTypeError, match="join must be a function"):
        model(x, join=3)
    with pytest.raises(ValueError, match="parallel"):
        model(x, mode="parallel", join=lambda t: None)
    assert model.joins({}) and not model.joins({"mode": "parallel"})
