from dataclasses import asdict

import numpy as np
import pytest
import torch

from models.act import ACT, ACTConfig, halt_step, halting_schedule
from models.act_data import addition_batch, model_shape, parity_batch, sample_batch
from workbench import checkpoints
from workbench.hooks import UnknownHookError, stack
from workbench.tasks import addition as add
from workbench.tasks import parity as par

PARITY = par.ParityConfig(size=8)
ADDITION = add.AdditionConfig(max_digits=2, max_numbers=3)


def small(task: str = "parity", **kw) -> ACT:
    torch.manual_seed(0)
    tc = PARITY if task == "parity" else ADDITION
    cfg = dict(hidden=16, max_ponder=6, halt_bias_init=-1.0, task_name=task, task=asdict(tc), **model_shape(task, tc))
    return ACT(ACTConfig(**{**cfg, **kw})).eval()


def varied(model: ACT) -> ACT:
    """Strong random halting weights, so that samples halt after different numbers of steps."""
    with torch.no_grad():  # W_h starts at zero (every input alike); give it random weights
        model.halt.weight.copy_(torch.randn(model.halt.weight.shape, generator=torch.Generator().manual_seed(0)) * 2.0)
    return model


def batch(task: str = "parity", n: int = 8, seed: int = 0) -> dict:
    return sample_batch(task, PARITY if task == "parity" else ADDITION, n, np.random.default_rng(seed))


# ------------------------------------------------------------ halting arithmetic
def test_halting_by_hand_at_the_eps_boundary():
    # eps = 1/8 keeps every sum exact in binary floating point
    h = torch.tensor([[0.25, 0.5, 0.125, 0.5],  # cum 0.875 = 1 - eps at step 3: halts there
                      [0.25, 0.5, 0.0625, 0.5],  # cum 0.8125 < 0.875 at step 3: halts at step 4
                      [0.875, 0.5, 0.5, 0.5],  # 1 - eps at the first step: N = 1, R = 1
                      [0.0625, 0.0625, 0.0625, 0.0625]])  # never reaches it: the cap M = 4
    N, R, p = halting_schedule(h, eps=0.125)
    assert N.tolist() == [3, 4, 1, 4]
    assert R.tolist() == [0.25, 0.1875, 1.0, 0.8125]
    assert p.tolist() == [[0.25, 0.5, 0.25, 0.0],
                          [0.25, 0.5, 0.0625, 0.1875],
                          [1.0, 0.0, 0.0, 0.0],
                          [0.0625, 0.0625, 0.0625, 0.8125]]
    assert torch.equal(p.sum(-1), torch.ones(4))


def test_halting_with_the_papers_eps_and_a_cap():
    h = torch.tensor([[0.3, 0.3, 0.3, 0.3, 0.3], [0.1, 0.1, 0.1, 0.1, 0.1]], dtype=torch.float64)
    N, R, p = halting_schedule(h, eps=0.01)
    assert N.tolist() == [4, 5]
    assert R.tolist() == pytest.approx([0.1, 0.6])
    N, R, p = halting_schedule(h, eps=0.01, max_ponder=2)
    assert N.tolist() == [2, 2]
    assert R.tolist() == pytest.approx([0.7, 0.9])
    assert p.sum(-1).tolist() == pytest.approx([1.0, 1.0])
    assert p[:, 2:].abs().sum() == 0


def test_only_the_remainder_carries_the_ponder_gradient():
    h = torch.tensor([0.3, 0.2, 0.45, 0.4], requires_grad=True)
    N, R, _ = halting_schedule(h, eps=0.01)
    assert int(N) == 4
    (N + R).backward()
    assert h.grad.tolist() == [-1.0, -1.0, -1.0, 0.0]  # dP/dh_n = -1 for n < N, 0 for the last


def test_halt_step_leaves_samples_that_do_not_run():
    cum = torch.tensor([0.5, 0.7])
    p, halts, new = halt_step(cum, torch.tensor([0.9, 0.9]), torch.tensor([True, False]), 1, 0.01, 10)
    assert p.tolist() == [0.5, 0.0] and halts.tolist() == [True, False]
    assert new.tolist() == pytest.approx([1.4, 0.7])


# --------------------------------------------------------------------- the model
def test_forward_agrees_with_the_halting_rule_and_mean_field():
    model = varied(small(halt_bias_init=-1.0))
    b = batch(n=32)
    out, cache = model.run_with_cache(b["inputs"])
    N = out.n_steps[:, 0]
    assert N.min() >= 1 and N.max() <= 6 and len(set(N.tolist())) > 1  # samples ponder for different times
    steps = int(N.max())
    h = stack(cache, "hook_halt", loop="time.0.ponder").T  # [batch, steps]
    p = stack(cache, "hook_weight", loop="time.0.ponder").T
    N_ref, R_ref, p_ref = halting_schedule(h, eps=model.cfg.eps, max_ponder=model.cfg.max_ponder)
    assert torch.equal(N_ref, N) and torch.allclose(R_ref, out.remainder[:, 0])
    assert torch.allclose(p, p_ref)
    assert torch.allclose(p.sum(1), torch.ones(32))
    states = stack(cache, "hook_state", loop="time.0.ponder")  # [steps, batch, state]
    outputs = stack(cache, "hook_output", loop="time.0.ponder")
    assert torch.allclose(cache["time.0.hook_state"], torch.einsum("nb,nbd->bd", p.T, states), atol=1e-6)
    assert torch.allclose(out.outputs[:, 0], torch.einsum("nb,nbd->bd", p.T, outputs), atol=1e-6)
    assert torch.allclose(cache["time.0.hook_ponder_cost"], N + out.remainder[:, 0])
    assert f"time.0.ponder.{steps}.hook_state" not in cache  # steps nobody ran are absent
    # the first-step flag is 1 on the first ponder step only
    assert cache["time.0.ponder.0.hook_input"][:, -1].eq(1).all()
    assert cache["time.0.ponder.1.hook_input"][:, -1].eq(0).all()


def test_a_halted_sample_never_changes_and_ignores_its_batch():
    model = varied(small(halt_bias_init=-1.0))
    b = batch(n=32)
    out, cache = model.run_with_cache(b["inputs"])
    N = out.n_steps[:, 0]
    fast = int(N.argmin())
    k = int(N[fast])
    assert k < int(N.max())
    for n in range(k, int(N.max())):  # later steps of the batch leave it frozen, with zero weight
        pre = f"time.0.ponder.{n}."
        assert torch.equal(cache[pre + "hook_state"][fast], cache[f"time.0.ponder.{k - 1}.hook_state"][fast])
        assert cache[pre + "hook_halt"][fast] == 0 and cache[pre + "hook_weight"][fast] == 0
    for i in range(4):  # alone or in a batch: the same result
        alone = model(b["inputs"][i : i + 1])
        assert int(alone.n_steps[0, 0]) == int(N[i])
        assert torch.allclose(alone.outputs[0], out.outputs[i], atol=1e-6)
        assert torch.allclose(alone.state[0], out.state[i], atol=1e-6)


def test_patching_the_halting_logit_changes_how_long_the_model_ponders():
    model = small()
    x = batch(n=16)["inputs"]
    clean = model(x).n_steps[:, 0]
    assert (clean > 1).all()
    stop = model.run_with_hooks(x, fwd_hooks=[("time.0.ponder.0.hook_halt_logit", lambda a, hook: a + 20.0)])
    assert stop.n_steps[:, 0].tolist() == [1] * 16
    never = model.run_with_hooks(x, fwd_hooks=[(lambda name: name.endswith("hook_halt_logit"),
                                                lambda a, hook: a - 20.0)])
    assert never.n_steps[:, 0].tolist() == [model.cfg.max_ponder] * 16  # the cap M
    one = model.run_with_hooks(x, fwd_hooks=[("time.0.ponder.0.hook_halt_logit",
                                              lambda a, hook: torch.where(torch.arange(16) == 3, a + 20, a))])
    changed = (one.n_steps[:, 0] != clean).nonzero().flatten().tolist()
    assert changed == [3]
    assert torch.equal(one.outputs[:3], model(x).outputs[:3])


def test_ponder_cost_gradient_reaches_the_halting_bias_only_through_R():
    model = small(halt_bias_init=-0.5)
    x = batch(n=8)["inputs"]
    out, cache = model.run_with_cache(x)
    model.zero_grad()
    model(x).ponder_cost.sum().backward()
    h = stack(cache, "hook_halt", loop="time.0.ponder")  # [steps, batch]
    N = out.n_steps[:, 0]
    before_last = torch.arange(h.shape[0])[:, None] < (N - 1)[None, :]
    expected = -(h * (1 - h) * before_last).sum()
    assert torch.allclose(model.halt.bias.grad, expected[None], atol=1e-6)


def test_act_off_is_a_fixed_number_of_plain_steps():
    model = small(act=False, fixed_steps=3, cell="gru")
    x = batch(n=4)["inputs"]
    out, cache = model.run_with_cache(x)
    assert out.n_steps[:, 0].tolist() == [3] * 4 and out.remainder[:, 0].tolist() == [1.0] * 4
    assert not any("halt" in k for k in cache)
    s = torch.zeros(4, 16)
    for n in range(3):
        flag = torch.full((4, 1), 1.0 if n == 0 else 0.0)
        s = model.cell(torch.cat([x[:, 0], flag], 1), s)
    assert torch.allclose(out.state, s, atol=1e-6)
    assert torch.allclose(out.outputs[:, 0], model.readout(s), atol=1e-6)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_sequences_train_and_round_trip(cell, tmp_path):
    model = small("addition", cell=cell).train()
    b = batch("addition", n=16)
    short = b["mask"].sum(1) < b["mask"].shape[1]
    assert short.any()
    loss, stats = model.loss(b)
    loss.backward()
    assert torch.isfinite(loss) and model.halt.bias.grad is not None
    assert set(stats) == {"task_loss", "seq_error", "ponder"}
    model.eval()
    out = model(b["inputs"], b["mask"])
    assert (out.n_steps[~b["mask"]] == 0).all() and (out.n_steps[b["mask"]] >= 1).all()
    checkpoints.save(tmp_path / "m", model)
    again = checkpoints.load(tmp_path / "m", checkpoints.allow(ACT))
    assert torch.equal(again(b["inputs"], b["mask"]).outputs, out.outputs)
    assert model.cfg.state_size == (32 if cell == "lstm" else 16)


def test_padding_does_not_change_a_sequence():
    model = varied(small("addition"))
    problems = add.sample(ADDITION, 12, 5)
    together = model(**{k: v for k, v in addition_batch(problems, ADDITION).items() if k in ("inputs", "mask")})
    for i in (0, 1):
        alone = addition_batch(problems[i : i + 1], ADDITION)
        out = model(alone["inputs"], alone["mask"])
        T = out.outputs.shape[1]
        assert torch.allclose(out.outputs[0], together.outputs[i, :T], atol=1e-6)
        assert torch.equal(out.n_steps[0], together.n_steps[i, :T])


def test_hook_names_and_bad_inputs():
    model = small("addition")
    assert model.loop_sizes == {"time": 3, "ponder": 6}
    for name in ("time.2.ponder.5.hook_halt", "time.0.ponder.0.hook_cum_halt", "time.1.hook_n_steps",
                 "time.1.hook_remainder", "time.0.hook_ponder_cost", "time.2.hook_state", "time.2.hook_output"):
        assert name in model.hook_dict
    with pytest.raises(UnknownHookError, match="loop 'ponder' has indices 0..5"):
        model.run_with_hooks(batch("addition")["inputs"], fwd_hooks=[("time.0.ponder.6.hook_halt", lambda a, hook: a)])
    with pytest.raises(ValueError, match=r"float tensor \[batch, T, 20\]"):
        model(torch.zeros(2, 3, 19))
    with pytest.raises(ValueError, match="T \\(input steps\\)=4 is out of range"):
        model(torch.zeros(2, 4, 20))
    with pytest.raises(ValueError, match="mask must be a bool tensor"):
        model(torch.zeros(2, 3, 20), torch.ones(2, 3))
    with pytest.raises(ValueError, match="cell='tanh'; allowed"):
        ACTConfig(cell="tanh")
    with pytest.raises(ValueError, match="fixed_steps=9 must be in 1..max_ponder=6"):
        ACTConfig(act=False, fixed_steps=9, max_ponder=6)
    with pytest.raises(ValueError, match="unknown task"):
        sample_batch("sorting", PARITY, 2, np.random.default_rng(0))


def test_parity_batch_matches_the_task():
    s = par.sample(PARITY, 5, 0)
    b = parity_batch(s)
    assert b["inputs"].shape == (5, 1, 8) and b["targets"].tolist() == [[float(t)] for t in s.target]


# ------------------------------------------------------------------ command line
def test_cli_trains_evaluates_and_sweeps_tau(tmp_path, capsys):
    from apps.cli import main

    common = ["--preset", "parity", "--size", "6", "--hidden", "16", "--max-ponder", "6", "--steps", "30",
              "--curriculum-steps", "10", "--eval-every", "30", "--eval-n", "50", "--final-n", "200",
              "--threads", "1", "--no-progress"]
    for tau in ("0.001", "0.01"):
        assert main(["train", "act", *common, "--tau", tau, "--out", str(tmp_path / f"tau{tau}")]) == 0
    metrics = checkpoints.load_metrics(tmp_path / "tau0.001")
    assert metrics["evaluation"]["n"] == 200 and len(metrics["ponder_by_n_nonzero"]) == 6
    card = (tmp_path / "tau0.001" / "card.md").read_text()
    assert "workbench train act --preset parity" in card and "curriculum" in card
    out = tmp_path / "eval"
    models_arg = f"{tmp_path / 'tau0.001'},{tmp_path / 'tau0.01'}"
    assert main(["eval", "act", "--models", models_arg, "--n", "200", "--out", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert any(n.endswith("tau_sweep.csv") for n in names) and any(n.endswith("ponder_by_n_nonzero.html") for n in names)
    assert any(n.endswith("halting.html") for n in names)
    assert "tau sweep" in capsys.readouterr().out


def test_cli_rejects_bad_options(tmp_path, capsys):
    from apps.cli import main

    assert main(["train", "act", "--preset", "addition", "--curriculum-steps", "5", "--out", str(tmp_path / "x")]) == 2
    assert "--curriculum-steps is for the parity task only" in capsys.readouterr().err
    assert main(["train", "act", "--task", "parity", "--size", "70", "--out", str(tmp_path / "y")]) == 2
    assert "size=70 is out of range" in capsys.readouterr().err


def test_figures_from_an_evaluation():
    import pandas as pd

    from apps.views.act import halting_figure, ponder_difficulty_figure, ponder_sequence_figure, tau_sweep_figure
    from models.act_eval import evaluate, halting_trace, ponder_by

    model = varied(small("addition"))
    problems = add.sample(ADDITION, 40, 1)
    ev = evaluate(model, problems, batch_size=16)
    assert len(ev.steps) == sum(len(p.numbers) for p in problems)
    assert ev.summary()["n"] == 40 and 0 <= ev.summary()["error"] <= 1
    table = ponder_by(ev, "digits")
    assert table["digits"].tolist() == [1, 2] and table["n"].sum() == len(ev.steps)
    with pytest.raises(ValueError, match="unknown difficulty 'n_nonzero'"):
        ponder_by(ev, "n_nonzero")
    assert len(ponder_difficulty_figure(table.assign(model="m"), "digits").data) == 2
    b = addition_batch(problems[:1], ADDITION)
    trace = halting_trace(model, b["inputs"], b["mask"])
    assert trace.groupby("t")["p"].sum().round(5).eq(1.0).all()
    assert len(halting_figure(trace).data) == 3 * len(problems[0].numbers)
    sweep = pd.DataFrame({"tau": [1e-4, 1e-3, 1e-2], "error": [0.1, 0.05, 0.3], "mean_ponder": [9, 6, 2]})
    assert len(tau_sweep_figure(sweep).data) == 2
    assert len(ponder_sequence_figure(ev.steps[ev.steps.item < 3]).data) == 3


def test_untrained_halting_unit_treats_every_input_alike():
    model = small(halt_bias_init=-2.0)
    _, cache = model.run_with_cache(batch(n=16)["inputs"])
    h = cache["time.0.ponder.0.hook_halt"]
    assert torch.allclose(h, torch.sigmoid(torch.tensor(-2.0)).expand(16))
    assert ACTConfig().halt_bias_init == -2.0
