"""The loop-dynamics lab on the zoo: every family with a loop, through the registry's adapters
(models/dynamics_adapters.py), the ``workbench dynamics`` command, and loop_indexed on the reasoner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import models
from apps.cli import main
from models import dynamics_adapters as da
from models import registry
from workbench.dynamics import DynamicsResult

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parent.parent
LOOPED = ("reasoner", "act", "warp", "gru", "gain")

COLUMNS = {
    "lens": {"step", "example", "matches_final"},
    "convergence": {"step", "example", "update_norm", "relative_update", "dist_to_final", "cos_update", "norm"},
    "transfer": {"train_step", "test_step", "score", "control", "selectivity", "n_train", "n_test"},
    "basin": {"step", "eps", "example", "returns", "changed", "recovery_time", "ratio"},
    "fixed-points": {"point", "residual", "norm", "starts", "spectral_radius", "stability"},
}
# small and quick: a few inputs, few steps read, few starts
N = {"reasoner": 4, "act": 24, "warp": 12, "gru": 12, "gain": 8}
OPTIONS = {"transfer": {"max_steps": 4}, "basin": {"max_steps": 2, "eps": (0.1,), "samples": 1},
           "fixed-points": {"n_starts": 4, "max_iter": 12}}


@pytest.fixture(scope="module")
def zoo():
    out = {}
    for name in LOOPED:
        example = registry.get(name).dynamics_example
        out[name] = models.load(example)
    return out


CASES = [(f, a) for f in LOOPED for a in da.analyses_of(f)]


def test_every_looped_family_has_adapters_and_every_analysis_that_makes_sense():
    for name in LOOPED:
        family = registry.get(name)
        assert family.dynamics is not None and family.dynamics_example in models.available()
        a = da.family_adapters(name)
        assert a.family == name and a.analyses == da.analyses_of(name)
        assert set(family.dynamics.analyses) <= set(a.analyses)  # the registry's torch-free list
        for analysis in a.analyses:  # the page's quick settings
            assert 2 <= da.page_defaults(a, analysis)["n"] <= 64
    # every family decodes an answer; only the reasoner's step mixes positions (no cell of one row)
    assert [c[1] for c in CASES].count("lens") == [c[1] for c in CASES].count("basin") == 5
    assert [f for f, an in CASES if an == "fixed-points"] == ["act", "warp", "gru", "gain"]


def test_importing_the_registry_stays_torch_free():
    code = ("import sys, models, models.registry as r; assert r.get('act').dynamics.analyses; "
            "print('torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


@pytest.mark.parametrize("family,analysis", CASES)
def test_each_analysis_runs_on_each_flagship(zoo, family, analysis):
    res = da.run(zoo[family], analysis, n=N[family], seed=0, **OPTIONS.get(analysis, {}))
    assert isinstance(res, DynamicsResult)
    assert COLUMNS[analysis] <= set(res.df.columns), (family, analysis, list(res.df.columns))
    if analysis == "lens":  # classes: predictions and ranks; real values (a forecast): distances
        extra = {"values": {"error_final", "error_target"}, "classes": {"pred", "final", "rank_final"}}
        assert extra[res.meta["answers"]] <= set(res.df.columns)
        assert res.meta["answers"] == ("values" if family in ("warp", "gru") else "classes")
    assert res.meta["model_family"] == family and res.meta["analysis"] == analysis
    assert res.summary()
    if (family, analysis) == ("act", "fixed-points"):
        # the GRU cell of act-parity at a fixed input has only slow points near the visited states
        assert res.meta["starts"] == 4
    else:
        assert len(res.df) > 0, (family, analysis)
    res.figure()


def test_reasoner_lens_and_convergence_say_when_the_answer_commits(zoo):
    model = zoo["reasoner"]
    lens = da.run(model, "lens", n=4, seed=1)
    by_step = lens.tables["by_step"]
    last = by_step[by_step["layer"].isna()].iloc[-1]
    assert last["match_final"] == 1.0
    conv = da.run(model, "convergence", n=4, seed=1)
    assert conv.meta["median_commit_step"] is not None
    assert "by_difficulty" in conv.tables  # commit step against the problem's depth


def test_reasoner_basin_resumed_at_step_t_equals_runs_from_step_0(zoo):
    kw = dict(n=2, seed=0, eps=(0.5,), max_steps=3, samples=1)
    resumed, full = da.run(zoo["reasoner"], "basin", **kw), da.run(zoo["reasoner"], "basin", resume=False, **kw)
    assert resumed.meta["resumed"] and resumed.meta["forwards"] == 3 and full.meta["forwards"] == 1
    for col in ("returns", "changed", "recovery_time"):
        assert resumed.df[col].equals(full.df[col]), col


def test_reasoner_transfer_reads_every_answer_position_split_by_problem(zoo):
    res = da.run(zoo["reasoner"], "transfer", n=8, seed=0, positions="all", max_steps=3, probe="ridge")
    assert res.meta["probe_target"] == "value at every answer position"
    assert res.meta["train_examples"] + res.meta["test_examples"] == 8  # problems, not positions
    assert res.df["n_train"].iloc[0] + res.df["n_test"].iloc[0] > 8 * 10


def test_gain_fixed_point_is_the_steady_state(zoo):
    model = zoo["gain"]
    res = da.run(model, "fixed-points", n=4, seed=0, n_starts=4)
    batch = da.GAIN.inputs(model, 4, 0)
    steady = model(batch.inputs[:1])[0]
    assert len(res.df) == 1 and res.df["stability"].iloc[0] == "stable"
    point = torch.as_tensor(res.meta["points"][0])
    assert torch.allclose(point.to(steady.dtype), steady, atol=1e-6)


def test_an_analysis_that_does_not_apply_is_refused(zoo):
    with pytest.raises(ValueError, match="does not apply to the reasoner family .*attention mixes positions.*"
                                         "allowed: lens, convergence, transfer, basin"):
        da.run(zoo["reasoner"], "fixed-points")
    with pytest.raises(ValueError, match="positions='all' needs answer positions.*allowed: 'deepest'"):
        da.run(zoo["gain"], "transfer", n=8, positions="all")
    with pytest.raises(ValueError, match="max_steps=0"):
        da.run(zoo["gain"], "basin", n=4, max_steps=0)
    with pytest.raises(ValueError, match="unknown analysis"):
        da.run(zoo["gain"], "nope")
    with pytest.raises(ValueError, match="n=1"):
        da.run(zoo["gain"], "convergence", n=1)


# ------------------------------------------------------------------ loop_indexed on the reasoner
class _ReasonerCore(nn.Module):
    """One reasoner step as a module of its own.

    The Reasoner has no core submodule: ``model.step(x, t, layout)`` reads the hook points of
    step t from ``model.steps[t]``. This core always runs ``model.step(x, 0, layout)`` (and the
    bottleneck's codes and embedding) and holds step 0's hook points under the names a step
    gives them (``hook_input``, ``blocks.{l}...``, ``hook_resid_final``, ``bottleneck...``), so
    that ``loop_indexed`` swaps in the hook points of call t.
    """

    def __init__(self, model):
        super().__init__()
        s0 = model.steps[0]
        self.step_hooks = s0  # the slots that model.step reads (s0.hook_input, ...)
        self.hook_input, self.blocks, self.hook_resid_final, self.bottleneck = (
            s0.hook_input, s0.blocks, s0.hook_resid_final, s0.bottleneck)
        self._model = [model]  # not a submodule: its own per-step hooks stay out of the wrapper

    def forward(self, x, tokens, layout):
        model, bn = self._model[0], self.step_hooks.bottleneck
        _, logits = model.step(x, 0, layout)
        codes = bn.hook_codes(model.decode(logits, tokens))
        return bn.hook_embed(model.embed(codes)), logits[3]


class _LoopedReasoner(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.embed, self.blocks, self.ln_final, self.heads = model.embed, model.blocks, model.ln_final, model.heads
        self.core = _ReasonerCore(model)
        self._model = [model]

    def forward(self, tokens, steps):
        layout, x, values = self._model[0].layout(tokens), self.embed(tokens), []
        for _ in range(steps):
            x, v = self.core(x, tokens, layout)
            values.append(v)
        return torch.stack(values, dim=1)


def test_loop_indexed_on_the_reasoner_core_equals_the_native_hooks(zoo):
    from workbench.loops import loop_indexed

    model = zoo["reasoner"]
    batch = da.REASONER.inputs(model, 3, 0)
    T = batch.forward_kwargs["steps"]
    hooked = loop_indexed(_LoopedReasoner(model), loops={"steps": "core"}, max_steps=T)
    out, cache = hooked.run_with_cache(batch.inputs, steps=T)
    native_out, native = model.run_with_cache(batch.inputs, steps=T)
    assert torch.equal(out, native_out.value_logits)
    assert len(native) > 400 and set(native) <= set(cache)  # the same names ...
    for name, act in native.items():
        assert torch.equal(cache[name], act), name  # ... the same tensors
    assert set(cache) - set(native) == {f"steps.{t}.{h}" for t in range(T) for h in ("hook_in", "hook_out")}
    for t in range(T):
        assert torch.equal(cache[f"steps.{t}.hook_in"], native[f"steps.{t}.hook_input"])
        assert torch.equal(cache[f"steps.{t}.hook_out"], native[f"steps.{t}.bottleneck.hook_embed"])
    # outside the wrapper the model is as it was: its own hooks fire under its own names
    _, again = model.run_with_cache(batch.inputs, steps=T)
    assert set(again) == set(native)


# ------------------------------------------------------------------ the command
def test_the_command_writes_csv_and_html_and_prints_the_summary(capsys, tmp_path):
    assert main(["dynamics", "gain-v1", "--analysis", "convergence", "--n", "4", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "convergence:" in out and "fixed point" in out and "wrote" in out
    assert {"dynamics_convergence.csv", "dynamics_convergence.html"} <= {p.name for p in tmp_path.iterdir()}


def test_the_command_runs_the_page_settings_with_quick(capsys, tmp_path):
    assert main(["dynamics", "gru-msd", "--analysis", "basin", "--quick", "--n", "2", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "basin:" in out and "0.1" in out and "wrote" in out


@pytest.mark.parametrize("argv,expected", [
    (["reasoner", "--analysis", "fixed-points"], "does not apply to the Reasoner family"),
    (["reasoner", "--analysis", "fixed-points"], "allowed: lens, convergence, transfer, basin"),
    (["gain-v1", "--analysis", "spectrum"], "invalid choice"),
    (["gain-v1"], "--analysis"),
    (["gain-v1", "--analysis", "lens", "--n", "0"], "--n"),
    (["gain-v1", "--analysis", "lens", "--n", "1"], "--n 1"),
    (["no-such-model", "--analysis", "lens"], "no-such-model"),
])
def test_bad_arguments_give_one_line_and_exit_2(capsys, tmp_path, argv, expected):
    rc = main(["dynamics", *argv, "--out", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2 and "Traceback" not in out + err
    assert len(lines) == 1 and lines[0].startswith("workbench: error: ") and expected in lines[0], lines
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_for_result_draws_the_dynamics_kinds(zoo):
    from workbench import figures
    from workbench.results import Result

    res = da.run(zoo["gain"], "convergence", n=4, seed=0)
    plain = Result(res.kind, res.df, res.value, dict(res.meta), dict(res.tables))
    assert figures.for_result(plain, plain.value) is not None
