"""Every model refuses bad input before computing, with an error that names the argument and
says what is allowed; every config refuses values that make no sense or would exhaust memory.

The five model classes are built small here; each case says how to call the model and what its
main input looks like, and the same checks run over all of them.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
import pytest
import torch

import models
from models.act import ACT, ACTConfig
from models.gain import GainCircuit, GainConfig
from models.gru import GRU, GRUConfig
from models.reasoner import Reasoner, ReasonerConfig
from models.warp import Warp, WarpConfig
from workbench.checkpoints import CheckpointError
from workbench.inputs import InputTypeError
from workbench.tasks import graph_arith as ga

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------- the five models
@dataclass
class Case:
    build: Callable[[], torch.nn.Module]
    arg: str  # the main input's name in error messages
    valid: Callable[[torch.nn.Module], torch.Tensor]  # a valid main input [batch, ...]
    call: Callable[..., Any]  # call(model, x, **kw) -> output
    feature: Optional[int]  # the axis of a fixed size (None: none)
    time: Optional[int]  # the sequence axis (None: none)
    steps: Optional[str]  # the keyword of a loop length (None: the sequence length is it)


def reasoner_tokens(model: Reasoner, B: int = 2, L: int = 7) -> torch.Tensor:
    """Codes inside every factor's vocabulary, no padding."""
    g = torch.Generator().manual_seed(0)
    sizes = list(model.cfg.factor_sizes.values())
    cols = [torch.randint(1, sizes[0], (B, L), generator=g)]  # syntax: anything but PAD
    cols += [torch.randint(0, n, (B, L), generator=g) for n in sizes[1:]]
    return torch.stack(cols, dim=-1)


def small_reasoner() -> Reasoner:
    torch.manual_seed(0)
    return Reasoner(ReasonerConfig(modulus=5, name_pool=16, d_model=16, n_heads=2, d_mlp=32, max_steps=4)).eval()


def small_act() -> ACT:
    torch.manual_seed(0)
    return ACT(ACTConfig(input_size=4, hidden=8, cell="gru", max_ponder=3, max_time=3)).eval()


def small_warp() -> Warp:
    torch.manual_seed(0)
    return Warp(WarpConfig(d_in=2, root_width=4, seq_len=8)).eval()


def small_gru() -> GRU:
    torch.manual_seed(0)
    return GRU(GRUConfig(d_in=2, hidden=8, seq_len=8)).eval()


def small_gain() -> GainCircuit:
    return GainCircuit(GainConfig(n_neurons=12, max_steps=5, grid=16)).eval()


CASES = {
    "reasoner": Case(small_reasoner, "tokens", reasoner_tokens, lambda m, x, **kw: m(x, **{"steps": 2, **kw}),
                     feature=2, time=1, steps="steps"),
    "act": Case(small_act, "inputs", lambda m: torch.randn(2, 3, 4), lambda m, x, **kw: m(x, **kw),
                feature=2, time=1, steps=None),
    "warp": Case(small_warp, "x", lambda m: torch.randn(2, 6, 2), lambda m, x, **kw: m(x, **kw),
                 feature=2, time=1, steps=None),
    "gru": Case(small_gru, "x", lambda m: torch.randn(2, 6, 2), lambda m, x, **kw: m(x, **kw),
                feature=2, time=1, steps=None),
    "gain": Case(small_gain, "orientations", lambda m: torch.linspace(-90.0, 80.0, 4, dtype=torch.float64),
                 lambda m, x, **kw: m(x, **kw), feature=None, time=None, steps="steps"),
}
FLOAT_MODELS = [n for n in CASES if n != "reasoner"]
SEQUENCE_MODELS = [n for n in CASES if CASES[n].time is not None]


@pytest.fixture(scope="module")
def built():
    return {name: case.build() for name, case in CASES.items()}


def setup(name, built):
    case = CASES[name]
    model = built[name]
    return case, model, case.valid(model)


def primary(out) -> torch.Tensor:
    """The main tensor of any model's output."""
    if isinstance(out, torch.Tensor):
        return out
    for attr in ("codes", "outputs", "mean"):
        if hasattr(out, attr):
            return getattr(out, attr)
    return out


# ---------------------------------------------------------------------- inputs
@pytest.mark.parametrize("name", CASES)
def test_valid_input_runs(name, built):
    case, model, x = setup(name, built)
    with torch.no_grad():
        out = primary(case.call(model, x))
    assert out.shape[0] == x.shape[0]
    if out.is_floating_point():
        assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("bad", ["not a tensor", {"x": 1}, None])
def test_not_a_tensor_is_a_type_error(name, bad, built):
    case, model, _ = setup(name, built)
    with pytest.raises(TypeError, match=rf"{case.arg} must be an? \w+ tensor \[.*\].*; got") as err:
        case.call(model, bad)
    assert isinstance(err.value, ValueError)  # code that turns bad input into a message catches it too


@pytest.mark.parametrize("name", CASES)
def test_wrong_dtype_is_a_type_error_naming_what_is_allowed(name, built):
    case, model, x = setup(name, built)
    wrong = x.float() if name == "reasoner" else x.round().long()
    kind = "int64" if name == "reasoner" else "float"
    got = "float32" if name == "reasoner" else "int64"
    with pytest.raises(InputTypeError, match=rf"{case.arg} must be an? {kind} tensor \[.*; got \(.*\) {got}"):
        case.call(model, wrong)
    with pytest.raises(InputTypeError, match=case.arg):
        case.call(model, x.bool())


@pytest.mark.parametrize("name", FLOAT_MODELS)
def test_any_float_dtype_is_cast_to_the_models(name, built):
    """float64 (and float16) inputs are cast to the parameters' dtype: the same numbers as float32."""
    case, model, x = setup(name, built)
    with torch.no_grad():
        ref = primary(case.call(model, x.float()))
        for dtype in (torch.float64, torch.float16):
            same = x.float().to(dtype).float()  # the values a cast can represent
            out = primary(case.call(model, same.to(dtype)))
            assert out.dtype == ref.dtype
            if dtype == torch.float64:
                assert torch.equal(out, ref)


def test_reasoner_refuses_other_integer_dtypes(built):
    case, model, x = setup("reasoner", built)
    for dtype in (torch.int32, torch.int16, torch.uint8, torch.float64):
        with pytest.raises(InputTypeError, match=r"tokens must be an int64 tensor \[batch, pos, 4\].*\.long\(\)"):
            case.call(model, x.to(dtype))


@pytest.mark.parametrize("name", CASES)
def test_wrong_number_of_dimensions(name, built):
    case, model, x = setup(name, built)
    for wrong in (x[0], x[None], x.reshape(-1)[None, None, None]):
        if wrong.ndim == x.ndim:
            continue
        with pytest.raises(ValueError, match=rf"{case.arg} must be an? \w+ tensor \[.*; got .*{wrong.ndim} dimensions"):
            case.call(model, wrong)


@pytest.mark.parametrize("name", [n for n in CASES if CASES[n].feature is not None])
def test_wrong_feature_size(name, built):
    case, model, x = setup(name, built)
    n = x.shape[case.feature]
    for size in (n - 1, n + 1):
        wrong = torch.cat([x] * 2, dim=case.feature).narrow(case.feature, 0, size)
        with pytest.raises(ValueError, match=rf"{case.arg} must be .* \(axis {case.feature} must have size {n}\)"):
            case.call(model, wrong)


@pytest.mark.parametrize("name", CASES)
def test_empty_batch_and_empty_sequence(name, built):
    case, model, x = setup(name, built)
    with pytest.raises(ValueError, match=rf"{case.arg} is empty: shape \(0,.*needs at least one batch"):
        case.call(model, x[:0])
    if case.time is not None:
        with pytest.raises(ValueError, match=rf"{case.arg} is empty: .*needs at least one"):
            case.call(model, x.narrow(case.time, 0, 0))


@pytest.mark.parametrize("name", FLOAT_MODELS)
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_inputs_are_refused(name, value, built):
    case, model, x = setup(name, built)
    bad = x.clone()
    bad.view(-1)[-1] = value  # the last element: the first bad one is the last batch row
    last = x.shape[0] - 1
    with pytest.raises(ValueError, match=rf"{case.arg} has 1 non-finite values \(NaN or inf\).*first at batch {last}"):
        case.call(model, bad)


@pytest.mark.parametrize("name", FLOAT_MODELS)
def test_float64_beyond_float32_range_is_refused_after_the_cast(name, built):
    case, model, x = setup(name, built)
    if name == "gain":
        pytest.skip("the circuit computes in float64: nothing overflows")
    bad = x.double()
    bad.view(-1)[0] = 1e300
    with pytest.raises(ValueError, match="non-finite .*after casting float64 to float32"):
        case.call(model, bad)


@pytest.mark.parametrize("factor", list(ga.FACTORS))
@pytest.mark.parametrize("code", ["too_big", -1])
def test_reasoner_codes_outside_a_factors_vocabulary(factor, code, built):
    case, model, x = setup("reasoner", built)
    i = ga.FACTORS.index(factor)
    n = model.cfg.factor_sizes[factor]
    bad = x.clone()
    bad[1, 3, i] = n if code == "too_big" else code
    with pytest.raises(ValueError, match=rf"tokens: factor '{factor}' has codes in .*; allowed 0..{n - 1}"):
        case.call(model, bad)


def test_reasoner_all_padding_sequence_is_refused(built):
    case, model, x = setup("reasoner", built)
    bad = x.clone()
    bad[1, :, 0] = ga.PAD
    with pytest.raises(ValueError, match=r"tokens: 1 sequence\(s\) are all padding \(first: batch 1\)"):
        case.call(model, bad)


def test_reasoner_training_batches_are_checked(built):
    _, model, x = setup("reasoner", built)
    B, L, _ = x.shape
    good = {"inputs": x, "targets": x.clone(), "weight": torch.ones(B, L)}
    model.loss(good)  # runs
    with pytest.raises(ValueError, match=r"batch\['targets'\] must be an int64 tensor \[batch, pos, 4\]"):
        model.loss({**good, "targets": x[:, :-1]})
    with pytest.raises(ValueError, match=r"batch\['weight'\] must be a float tensor \[batch, pos\]"):
        model.loss({**good, "weight": torch.ones(B, L + 1)})
    with pytest.raises(ValueError, match=r"batch\['inputs'\]: factor 'op' has codes"):
        bad = x.clone()
        bad[0, 0, 2] = 99
        model.loss({**good, "inputs": bad})
    with pytest.raises(TypeError, match="batch must be a dict with 'inputs', 'targets' and 'weight'"):
        model.loss({"inputs": x})


# ------------------------------------------------------------------ loop lengths
@pytest.mark.parametrize("name", [n for n in CASES if CASES[n].steps])
def test_steps_must_be_an_integer_from_1_to_max_steps(name, built):
    case, model, x = setup(name, built)
    size = model.loop_sizes["steps" if name == "reasoner" else "time"]
    for steps in (1, size):
        case.call(model, x, **{case.steps: steps})
    for steps in (0, -1, size + 1):
        with pytest.raises(ValueError, match=rf"steps={steps} is out of range.*allowed steps: .*1..{size}"):
            case.call(model, x, **{case.steps: steps})
    for steps in (2.0, "2", True):
        with pytest.raises(InputTypeError, match=rf"steps must be an integer in 1..{size}; got"):
            case.call(model, x, **{case.steps: steps})


@pytest.mark.parametrize("name", SEQUENCE_MODELS[1:])  # ACT, WARP, GRU: the sequence is the loop
def test_sequences_longer_than_the_hook_points_are_refused(name, built):
    case, model, x = setup(name, built)
    size = model.loop_sizes["time"]
    long = torch.cat([x] * (size // x.shape[1] + 1), dim=1)
    with pytest.raises(ValueError, match=rf"{size}"):
        case.call(model, long)


@pytest.mark.parametrize("name", ["warp", "gru"])
def test_forecasting_arguments(name, built):
    case, model, x = setup(name, built)
    assert model.generate(x[:, :3], 4).shape == (2, 4, 2)
    for bad in (0, -2):
        with pytest.raises(ValueError, match=rf"horizon={bad} is out of range; allowed >= 1"):
            model.generate(x[:, :3], bad)
    with pytest.raises(InputTypeError, match="horizon must be an integer"):
        model.generate(x[:, :3], 2.5)
    with pytest.raises(InputTypeError, match="context must be an integer"):
        model(x, context="3", horizon=2)
    with pytest.raises(ValueError, match=r"context=0 is out of range; allowed 1..6"):
        model(x, context=0, horizon=2)
    with pytest.raises(InputTypeError, match=r"prefix must be a float tensor"):
        model.generate(x[:, :3].long(), 2)
    with pytest.raises(ValueError, match=r"feed must be a bool tensor \[batch, time\] = \(2, 6\); got \(2, 5\)"):
        model(x, feed=torch.ones(2, 5, dtype=torch.bool))


def test_act_mask_and_gain_start_rates(built):
    _, act, x = setup("act", built)
    with pytest.raises(InputTypeError, match=r"mask must be a bool tensor \[batch, T\] = \[2, 3\]; got \(2, 3\) float"):
        act(x, torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"mask must be a bool tensor .*got \(2, 2\) bool"):
        act(x, torch.ones(2, 2, dtype=torch.bool))
    _, gain, s = setup("gain", built)
    n = gain.n
    assert gain(s, steps=2, r0=torch.zeros(n)).shape == (4, n)
    assert gain(s, steps=2, r0=np.zeros((1, n))).shape == (4, n)
    with pytest.raises(ValueError, match="r0 is the start of the Euler dynamics: give steps too"):
        gain(s, r0=torch.zeros(n))
    with pytest.raises(ValueError, match=r"r0 must be a float tensor \[batch, n\].*got \(3, 12\)"):
        gain(s, steps=2, r0=torch.zeros(3, n))
    with pytest.raises(ValueError, match=r"r0 has \d+ non-finite values"):
        gain(s, steps=2, r0=torch.full((n,), float("nan")))


def test_gain_accepts_arrays_of_floats_in_full_precision(built):
    _, gain, s = setup("gain", built)
    assert torch.equal(gain(s.numpy()), gain(s))
    assert torch.equal(gain(s.tolist()), gain(s))
    with pytest.raises(InputTypeError, match=r"orientations must be a float tensor \[batch\] of degrees; got \(3,\)"):
        gain([0, 45, 90])


# -------------------------------------------------------------- config bounds
CONFIGS = {
    "reasoner": (Reasoner, dict(modulus=5, name_pool=16, d_model=16, n_heads=2, d_mlp=32, max_steps=4)),
    "act": (ACT, dict(input_size=4, hidden=8, max_ponder=3, max_time=3)),
    "warp": (Warp, dict(d_in=2, root_width=4, seq_len=8)),
    "gru": (GRU, dict(d_in=2, hidden=8, seq_len=8)),
    "gain": (GainCircuit, dict(n_neurons=12, max_steps=5, grid=16)),
}

BAD_CONFIGS = [
    # (model, field, value, what the message says)
    ("reasoner", "d_model", 10**7, "d_model=10000000 is out of range; allowed: an integer in 1..100000"),
    ("reasoner", "d_model", 1e7, "d_model=10000000.0 is of type float; allowed: an integer"),
    ("reasoner", "d_model", "128", "d_model='128' is of type str"),
    ("reasoner", "n_heads", 0, "n_heads=0 is out of range"),
    ("reasoner", "d_model", 20_000, "parameters .* exceeds the cap"),
    ("reasoner", "max_steps", 10**6, "max_steps=1000000 is out of range; allowed: an integer in 1..10000"),
    ("reasoner", "max_steps", 9000, "hook points .* exceeds the cap .*lower max_steps or n_layers"),
    ("reasoner", "fixed_steps", 5, r"fixed_steps=5 is out of range; allowed: an integer in 1..4 or None"),
    ("reasoner", "error_prob", 1.5, r"error_prob=1.5 is out of range; allowed: a finite number >= 0.0 and <= 1.0"),
    ("reasoner", "new_slot_weight", float("nan"), "new_slot_weight=nan is out of range"),
    ("reasoner", "causal", "yes", "causal='yes' is of type str; allowed: true or false"),
    ("reasoner", "modulus", 1, "modulus=1 is out of range"),
    ("reasoner", "task", "graph", "task='graph' is of type str; allowed: a dict"),
    ("act", "max_time", 1e7, "max_time=10000000.0 is of type float; allowed: an integer in 1..10000"),
    ("act", "max_time", 10**7, "max_time=10000000 is out of range; allowed: an integer in 1..10000"),
    ("act", "hidden", 1e7, "hidden=10000000.0 is of type float"),
    ("act", "hidden", 50_000, "parameters of the cell.* exceeds the cap"),
    ("act", "hidden", True, "hidden=True is of type bool"),
    ("act", "max_ponder", 9_000, "hook points .* exceeds the cap .*lower max_time or max_ponder"),
    ("act", "eps", 1.0, r"eps=1.0 is out of range; allowed: a finite number > 0.0 and < 1.0"),
    ("act", "tau", -1, "tau=-1 is out of range; allowed: a finite number >= 0.0"),
    ("act", "tau", float("inf"), "tau=inf is out of range"),
    ("act", "halt_bias_init", None, "halt_bias_init=None is of type NoneType"),
    ("warp", "root_width", 10**4, r"parameters \(2 \* D\^2 .* exceeds the cap"),
    ("warp", "root_width", 2.0, "root_width=2.0 is of type float"),
    ("warp", "seq_len", 10**7, "seq_len=10000000 is out of range; allowed: an integer in 2..10000"),
    ("warp", "seq_len", 1, "seq_len=1 is out of range"),
    ("warp", "a_scale", 0.0, "a_scale=0.0 is out of range; allowed: a finite number > 0.0"),
    ("warp", "std_min", -1e-3, "std_min=-0.001 is out of range"),
    ("warp", "phys_scales", ["a"], "phys_scales=.*allowed: a list of positive finite numbers"),
    ("warp", "regress", 1, "regress=1 is of type int; allowed: true or false"),
    ("gru", "hidden", 10**7, "hidden=10000000 is out of range"),
    ("gru", "hidden", 90_000, "parameters .* exceeds the cap"),
    ("gru", "seq_len", 128.0, "seq_len=128.0 is of type float"),
    ("gain", "n_neurons", 10**5, r"n_neurons=100000 is out of range; allowed: an integer in 3..1024"),
    ("gain", "max_steps", 1e7, "max_steps=10000000.0 is of type float"),
    ("gain", "tau", 0, r"tau=0 is out of range; allowed: a finite number > 0.0"),
    ("gain", "grid", 10**9, "grid=1000000000 is out of range"),
    ("gain", "biased", 3, "biased=3 is of type int; allowed: a distribution"),
]


@pytest.mark.parametrize("name,field,value,message", BAD_CONFIGS,
                         ids=[f"{n}-{f}={v!r}" for n, f, v, _ in BAD_CONFIGS])
def test_bad_config_values_are_refused_quickly(name, field, value, message):
    cls, base = CONFIGS[name]
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=message) as err:
        cls.from_config({**base, field: value})
    assert time.perf_counter() - t0 < 5.0
    assert field in str(err.value)


@pytest.mark.parametrize("name", CONFIGS)
def test_small_configs_build_and_round_trip(name):
    cls, base = CONFIGS[name]
    model = cls.from_config(base)
    again = cls.from_config(json.loads(json.dumps(model.config_dict())))
    assert again.config_dict() == model.config_dict()


def test_a_checkpoint_with_a_huge_value_is_refused_quickly(tmp_path):
    """config.json is where such values come from: ``models.load`` stops at once and names the field."""
    (tmp_path / "config.json").write_text(json.dumps(
        {"class": "models.act.ACT", "config": {**CONFIGS["act"][1], "max_time": 1e7}}))
    t0 = time.perf_counter()
    with pytest.raises(CheckpointError, match="config does not build models.act.ACT: .*max_time=10000000.0"):
        models.load(tmp_path)
    assert time.perf_counter() - t0 < 5.0


def test_hook_budgets_match_the_models_hook_points():
    """The hook-point counts the configs refuse by are the ones the models build."""
    for cls, cfg, formula in [
        (Reasoner, ReasonerConfig(d_model=16, n_heads=2, d_mlp=32, max_steps=5, n_layers=3), 5 * (8 + 14 * 3)),
        (ACT, ACTConfig(max_time=3, max_ponder=4), 3 * (7 * 4 + 5)),
        (Warp, WarpConfig(root_depth=3, seq_len=7), 8 * (2 * 3 + 9)),
    ]:
        assert len(cls(cfg).hook_dict) == formula
