"""The loop-dynamics lab on hand-made dynamics with known answers (workbench/dynamics/)."""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from tests.looped_models import Affine, Counter, MapLoop, Rotation, Stages, counter_readout
from workbench import dynamics as dyn
from workbench.loops import loop_indexed

torch.set_num_threads(1)
STATE = "steps.{t}.hook_out"


def looped(step: torch.nn.Module, max_steps: int = 64):
    m = MapLoop(step)
    return loop_indexed(m, loops={"steps": m.step}, max_steps=max_steps)


def contraction(d: int = 5, radius: float = 0.7, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(d, d, generator=g)
    A = radius * A / torch.linalg.eigvals(A).abs().max()
    return A, torch.randn(d, generator=g)


def axis_titles(fig: go.Figure) -> dict[str, str]:
    layout = fig.to_plotly_json()["layout"]
    return {k: (v.get("title") or {}).get("text", "") for k, v in layout.items()
            if k.startswith(("xaxis", "yaxis"))}


# ------------------------------------------------------------------ fixed points
def test_fixed_points_of_a_contraction_match_the_closed_form():
    A, b = contraction()
    res = dyn.fixed_points(Affine(A, b), dim=5, n_starts=12, scale=3.0)
    assert len(res.df) == 1 and res.df.loc[0, "stability"] == "stable"
    assert res.df.loc[0, "starts"] == 12 and res.meta["converged"] == 12
    np.testing.assert_allclose(res.meta["points"][0], torch.linalg.solve(torch.eye(5) - A, b).numpy(), atol=1e-5)
    np.testing.assert_allclose(res.meta["jacobians"][0], A.numpy(), atol=1e-6)
    got = res.tables["eigenvalues"]
    got = sorted(zip(got["real"].round(5), got["imag"].round(5)))
    want = sorted((round(z.real, 5), round(z.imag, 5)) for z in torch.linalg.eigvals(A.double()).tolist())
    np.testing.assert_allclose(np.array(got), np.array(want), atol=2e-5)
    assert res.df.loc[0, "spectral_radius"] == pytest.approx(0.7, abs=1e-5)


def test_fixed_points_are_deduplicated_and_labelled():
    # h0 -> tanh(2 h0) has fixed points 0 (slope 2: unstable) and +-x* (slope < 1: stable);
    # h1 -> h1 / 2 contracts, so (0, 0) is a saddle and (+-x*, 0) are stable
    F = lambda h: torch.stack([torch.tanh(2 * h[:, 0]), 0.5 * h[:, 1]], dim=1)  # noqa: E731
    res = dyn.fixed_points(F, dim=2, n_starts=40, scale=2.0, dtype=torch.float64)
    pts = res.meta["points"]
    assert len(res.df) == 3 and res.df["starts"].sum() == res.meta["converged"]
    x_star = 0.9575040240772687  # x = tanh(2 x)
    by_x = {round(float(p[0]), 6): label for p, label in zip(pts, res.df["stability"])}
    assert by_x == {0.0: "saddle", round(x_star, 6): "stable", round(-x_star, 6): "stable"}
    saddle = res.tables["eigenvalues"].query("stability == 'saddle'")
    assert sorted(saddle["real"].round(6)) == [0.5, 2.0]
    assert res.df.set_index("stability").loc["saddle", "unstable_directions"] == 1


def test_fixed_points_of_a_flow():
    c = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    res = dyn.fixed_points(lambda h: -(h - c), dim=3, kind="flow", n_starts=5)
    assert len(res.df) == 1 and res.df.loc[0, "stability"] == "stable"
    np.testing.assert_allclose(res.meta["points"][0], c.numpy(), atol=1e-8)
    np.testing.assert_allclose(res.tables["eigenvalues"]["real"], -1.0, atol=1e-8)
    assert res.df.loc[0, "max_real"] == pytest.approx(-1.0)


# ------------------------------------------------------------------ convergence
def test_a_rotation_never_converges():
    theta = 0.3
    x = torch.randn(4, 2)
    res = dyn.convergence(looped(Rotation(theta)), x, state_hooks=STATE, forward_kwargs={"steps": 25})
    ex = res.tables["examples"]
    assert not ex["fixed_point"].any() and res.meta["fixed_point_rate"] == 0.0
    df = res.df[res.df.step >= 1]
    radius = x.norm(dim=1).numpy()[df["example"].to_numpy()]
    np.testing.assert_allclose(df["update_norm"], 2 * math.sin(theta / 2) * radius, rtol=1e-4)  # constant
    np.testing.assert_allclose(res.df[res.df.step >= 2]["cos_update"], math.cos(theta), atol=1e-5)
    assert res.df[res.df.step == 0]["update_norm"].isna().all()


def test_a_contraction_reaches_a_fixed_point_and_step_fn_checks_it():
    A, b = contraction(d=3, radius=0.5)
    model = looped(Affine(A, b))
    x = torch.randn(6, 3)
    res = dyn.convergence(model, x, state_hooks=STATE, forward_kwargs={"steps": 40})
    assert res.tables["examples"]["fixed_point"].all()
    dist = res.df.pivot_table(index="step", columns="example", values="dist_to_final")
    assert (dist.loc[0] > 1e2 * dist.loc[10]).all() and (dist.loc[10] > 1e2 * dist.loc[30]).all()
    short = dyn.convergence(model, x, state_hooks=STATE, forward_kwargs={"steps": 3}, step_fn=Affine(A, b))
    assert not short.tables["examples"]["fixed_point"].any() and short.meta["one_more_step"] == "step_fn"


def test_commit_step_of_a_step_function():
    # h_t = x + t + 1 read as min(round(h), K - 1): the answer K - 1 arrives at step K - 2 - x
    K = 5
    x = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0])[:, None]
    difficulty = (K - 1 - x[:, 0]).numpy()
    res = dyn.convergence(looped(Counter()), x, state_hooks=STATE, readout=counter_readout(K),
                          difficulty=difficulty, forward_kwargs={"steps": 8})
    ex = res.tables["examples"]
    assert ex["commit_step"].tolist() == [3, 2, 1, 0, 0]
    assert (ex["final_pred"] == K - 1).all()
    assert not ex["fixed_point"].any()  # the state itself keeps moving; only the answer settled
    assert res.df.groupby("example")["changed"].sum().tolist() == [3, 2, 1, 0, 0]
    by = res.tables["by_difficulty"].set_index("difficulty")
    assert by.loc[4.0, "mean_commit_step"] == 3 and by.loc[0.0, "mean_commit_step"] == 0


def test_commit_step_per_position_and_mask():
    K = 4
    x = torch.tensor([[[0.0], [2.0]], [[1.0], [3.0]]])  # [batch 2, pos 2, 1]
    res = dyn.convergence(looped(Counter()), x, state_hooks=STATE, readout=counter_readout(K),
                          forward_kwargs={"steps": 5})
    ex = res.tables["examples"].set_index(["example", "pos"])
    assert ex["commit_step"].to_dict() == {(0, 0): 2, (0, 1): 0, (1, 0): 1, (1, 1): 0}
    masked = dyn.convergence(looped(Counter()), x, state_hooks=STATE, readout=counter_readout(K),
                             mask=torch.tensor([[True, False], [True, True]]), forward_kwargs={"steps": 5})
    assert len(masked.tables["examples"]) == 3 and len(masked.df) == 3 * 5


# ------------------------------------------------------------------ iteration lens
def test_iteration_lens_is_right_from_a_known_step():
    K = 6
    x = torch.tensor([0.0, 1.0, 2.0, 4.0])[:, None]
    target = torch.full((4,), K - 1)
    res = dyn.iteration_lens(looped(Counter()), x, state_hooks=STATE, readout=counter_readout(K), target=target,
                             forward_kwargs={"steps": 7})
    by = res.tables["by_step"].set_index("step")
    # right from step K - 2 - x: 4, 3, 2, 0
    want = [np.mean([t >= s for s in (4, 3, 2, 0)]) for t in range(7)]
    np.testing.assert_allclose(by["accuracy"], want)
    np.testing.assert_allclose(by["match_final"], want)  # the final answer is the true one here
    assert (res.df["correct"] == (res.df["rank_target"] == 0)).all()
    assert by["rank_target"].is_monotonic_decreasing and by["prob_target"].is_monotonic_increasing
    first_right = res.df[res.df.correct].groupby("example")["step"].min().tolist()
    assert first_right == [4, 3, 2, 0]


def test_iteration_lens_reads_layers_inside_steps():
    model = looped(Stages(Counter(0.5), Counter(0.5)))
    x = torch.zeros(3, 1)
    res = dyn.iteration_lens(model, x, state_hooks=STATE, readout=counter_readout(10),
                             layer_hooks="steps.{t}.blocks.{l}.hook_out", forward_kwargs={"steps": 4})
    by = res.tables["by_step"]
    assert len(by) == 4 * 3 and by["layer"].isna().sum() == 4
    assert by.iloc[:3]["hook"].tolist() == ["steps.0.blocks.0.hook_out", "steps.0.blocks.1.hook_out",
                                            "steps.0.hook_out"]
    last_layer = res.df[res.df.layer == 1].reset_index(drop=True)
    state = res.df[res.df.layer.isna()].reset_index(drop=True)
    assert (last_layer["pred"] == state["pred"]).all()  # the last stage's output is the step's output
    assert res.df[(res.df.step == 3) & (res.df.layer != 0)]["matches_final"].all()
    assert not res.df[(res.df.step == 3) & (res.df.layer == 0)]["matches_final"].any()  # h = 3.5 reads as 3


def test_binary_logit_and_integer_readouts():
    x = torch.tensor([[-0.5], [0.25]])
    model = looped(Affine(torch.tensor([[1.0]]), torch.tensor([0.5])))  # h -> h + 1/2
    logit = dyn.iteration_lens(model, x, state_hooks=STATE, readout=lambda h: h, target=torch.tensor([1, 1]),
                               forward_kwargs={"steps": 3})
    assert logit.tables["by_step"]["accuracy"].tolist() == [0.5, 1.0, 1.0]  # h_0 = 0 is not > 0
    ints = dyn.iteration_lens(model, x, state_hooks=STATE, readout=lambda h: (h[:, 0] > 0).long(),
                              target=torch.tensor([1, 1]), forward_kwargs={"steps": 3})
    assert ints.tables["by_step"]["accuracy"].tolist() == [0.5, 1.0, 1.0]
    assert ints.df["rank_target"].isna().all()


# ------------------------------------------------------------------ basin
def flip(h: torch.Tensor, eps: float, generator) -> torch.Tensor:
    """h - eps |h|: keeps the sign for eps < 1, flips it (to -(eps - 1) h) for eps > 1."""
    return h - eps * h.abs()


def test_basin_contraction_returns_unstable_map_does_not():
    x = torch.rand(8, 1) + 0.5
    sign = lambda h: h  # noqa: E731 (one binary logit: h > 0)
    stable = looped(Affine(torch.tensor([[0.5]]), torch.tensor([1.0])))  # fixed point 2
    unstable = looped(Affine(torch.tensor([[2.0]]), torch.tensor([0.0])))
    kw = dict(readout=sign, state_hooks=STATE, perturb=flip, eps=(0.5, 3.0), steps=[0, 2], samples=1,
              forward_kwargs={"steps": 12})
    a = dyn.basin(stable, x, **kw).tables["by_step"].set_index(["step", "eps"])
    b = dyn.basin(unstable, x, **kw).tables["by_step"].set_index(["step", "eps"])
    assert (a["return_rate"] == 1.0).all()
    assert a.loc[(0, 3.0), "changed_rate"] == 1.0 and a.loc[(0, 3.0), "median_recovery_time"] == 2
    assert (a["median_ratio"] < 1e-2).all()  # the state itself comes back
    assert b.loc[(0, 0.5), "return_rate"] == 1.0 and b.loc[(0, 3.0), "return_rate"] == 0.0
    assert np.isnan(b.loc[(0, 3.0), "median_recovery_time"])
    assert (b["median_ratio"] > 100).all()  # and runs away: 2^(steps after t)


def test_basin_with_noise_batches_samples_and_is_seeded():
    x = torch.rand(5, 1) + 0.5
    model = looped(Affine(torch.tensor([[0.5]]), torch.tensor([1.0])))
    kw = dict(readout=lambda h: h, state_hooks=STATE, eps=(0.1, 4.0), samples=3, forward_kwargs={"steps": 10})
    r1, r2 = dyn.basin(model, x, **kw), dyn.basin(model, x, **kw)
    assert r1.df.equals(r2.df)
    assert len(r1.df) == 10 * 2 * 3 * 5
    small = r1.df[r1.df.eps == 0.1]
    assert small["returns"].all() and not small["changed"].any()
    first = r1.df[(r1.df.step == 0) & (r1.df.eps == 0.1)]
    h0 = (0.5 * x[:, 0] + 1.0).repeat(3).numpy()  # the state after step 0, one row per (sample, example)
    np.testing.assert_allclose(first["perturbation"], 0.1 * np.abs(h0), rtol=1e-5)  # relative size eps * ||h||


# ------------------------------------------------------------------ probe transfer
def _synthetic(N=240, d=8, T=5, seed=0):
    """Labels appear at step 2 along e0, stay at step 3, and move to e1 at step 4."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, N)
    acts = rng.normal(size=(T, N, d))
    for t in range(2, T):
        acts[t, :, 0 if t < 4 else 1] += 3.0 * (2 * y - 1)
    return acts, y


def test_probe_transfer_matrix_and_control():
    acts, y = _synthetic()
    res = dyn.probe_transfer(torch.tensor(acts), y)
    m = res.df.pivot_table(index="train_step", columns="test_step", values="score")
    assert (np.diag(m)[2:] > 0.95).all() and (np.diag(m)[:2] < 0.75).all()
    assert m.loc[2, 3] > 0.95 and m.loc[3, 2] > 0.95  # same direction: the probe transfers
    assert m.loc[3, 4] < 0.75 and m.loc[4, 3] < 0.75  # the code moved: it does not
    diag = res.df[res.df.train_step == res.df.test_step]
    assert (diag["control"] - 0.5).abs().max() < 0.2
    assert (diag["selectivity"] == diag["score"] - diag["control"]).all()
    assert res.meta["train_examples"] + res.meta["test_examples"] == 240 and (res.df["status"] == "ok").all()


def test_probe_transfer_regression_positions_and_dict_input():
    acts, y = _synthetic(N=120, T=4)
    target = acts[3, :, 0].copy()  # a real-valued target read at step 3
    res = dyn.probe_transfer({f"s{t}": acts[t] for t in range(4)}, target, control=None)
    assert res.meta["metric"] == "r2" and list(res.df["train_step"].unique()) == ["s0", "s1", "s2", "s3"]
    assert res.df.query("train_step == 's3' and test_step == 's3'")["r2"].item() > 0.99
    assert res.df["control"].isna().all()
    # [steps, batch, pos, d] with a [batch, pos] target: split by example, never by position
    acts4 = np.stack([acts[:, :60], acts[:, 60:]], axis=2)  # [4, 60, 2, d]
    labels = np.stack([y[:60], y[60:]], axis=1)
    res4 = dyn.probe_transfer(acts4, labels)
    assert res4.meta["train_examples"] + res4.meta["test_examples"] == 60
    assert res4.df["n_test"].iloc[0] % 2 == 0
    with pytest.raises(ValueError, match="target's shape"):
        dyn.probe_transfer(acts4, y[:60])


def test_constant_target_is_a_status():
    acts, _ = _synthetic(N=40, T=2)
    res = dyn.probe_transfer(acts, np.zeros(40, int))
    assert (res.df["status"] == "constant target").all() and res.df["score"].isna().all()


# ------------------------------------------------------------------ results and adapters
def test_every_result_has_a_titled_figure_a_summary_and_saves(tmp_path):
    model = looped(Counter())
    x = torch.tensor([[0.0], [2.0], [3.0], [1.0]])
    kw = dict(state_hooks=STATE, readout=counter_readout(5), forward_kwargs={"steps": 5})
    acts, y = _synthetic(N=40, T=3)
    results = [
        dyn.iteration_lens(model, x, target=torch.full((4,), 4), **kw),
        dyn.convergence(model, x, difficulty=[4, 2, 1, 3], **kw),
        dyn.basin(model, x, eps=(0.1, 1.0), steps=[0, 2], samples=2, **kw),
        dyn.probe_transfer(acts, y),
        dyn.fixed_points(Affine(0.5 * torch.eye(2), torch.ones(2)), dim=2, n_starts=4),
    ]
    for res in results:
        fig = res.figure()
        assert isinstance(fig, go.Figure) and fig.layout.title.text
        titles = axis_titles(fig)
        assert titles and all(titles.values()), (res.kind, titles)
        assert res.summary().startswith(res.kind)
        paths = res.save(tmp_path / res.kind)
        assert all(p.exists() for p in paths)


def test_convergence_figure_draws_each_example_in_one_trace_per_panel():
    model = looped(Counter())
    x = torch.tensor([[0.0], [2.0], [3.0], [1.0]])
    res = dyn.convergence(model, x, state_hooks=STATE, readout=counter_readout(5), forward_kwargs={"steps": 5})
    grey = [t for t in res.figure().data if t.type == "scatter" and t.line.color == "lightgrey"]
    assert len(grey) == 2  # update size and distance to the final state, each one trace for all examples
    for trace, col in zip(grey, ("update_norm", "dist_to_final")):
        pieces, piece = [], []
        for v in trace.y:  # the line of each example, ended by a gap
            if v is None:
                pieces.append(piece)
                piece = []
            else:
                piece.append(v)
        examples = [g[col].to_numpy() for _, g in res.df.groupby("example", sort=True)]
        assert len(pieces) == len(examples) == 4 and piece == []
        for got, want in zip(pieces, examples):
            np.testing.assert_allclose(got, want)


def test_state_hook_forms_agree_and_bad_templates_name_the_hooks():
    model = looped(Counter(), max_steps=6)
    x = torch.zeros(2, 1)
    a = dyn.rollout_states(model, x, state_hooks=STATE, forward_kwargs={"steps": 4})
    b = dyn.rollout_states(model, x, state_hooks=lambda t: f"steps.{t}.hook_out", forward_kwargs={"steps": 4})
    c = dyn.rollout_states(model, x, state_hooks=[f"steps.{t}.hook_out" for t in range(6)],
                           forward_kwargs={"steps": 4})
    assert a.shape == (4, 2, 1) and torch.equal(a, b) and torch.equal(a, c)
    np.testing.assert_allclose(a[:, 0, 0], [1, 2, 3, 4])
    with pytest.raises(ValueError, match=r"steps\.\{steps\}\.hook_out"):
        dyn.convergence(model, x, state_hooks="steps.{t}.hook_state")
    with pytest.raises(ValueError, match=r"\{t\}"):
        dyn.convergence(model, x, state_hooks="steps.0.hook_out")
    with pytest.raises(ValueError, match="out of range"):
        dyn.basin(model, x, state_hooks=STATE, readout=counter_readout(3), steps=[9], forward_kwargs={"steps": 4})


# ------------------------------------------------------------------ real-valued answers (a forecast)
def test_values_lens_convergence_and_basin_of_a_contraction_have_known_answers():
    # h_{t+1} = h_t / 2 + 1 from h = 0: the state after step t is (2 - 2^-t) (1, 1), the fixed point 2 (1, 1)
    model = looped(Affine(0.5 * torch.eye(2), torch.ones(2)))
    x, T = torch.zeros(3, 2), 12
    kw = dict(state_hooks=STATE, readout=lambda h: h, answers="values", forward_kwargs={"steps": T})
    lens = dyn.iteration_lens(model, x, target=torch.full((3, 2), 2.0), **kw)
    by = lens.tables["by_step"]
    dist = math.sqrt(2) * 2 * 0.5 ** (np.arange(T) + 1)  # ||h_t - fixed point||
    np.testing.assert_allclose(by["error_target"], dist, rtol=1e-5)
    # the same answer: within tol = 0.01 of max(1, ||2 (1, 1)||) = 0.0283, from step 6 on
    assert by["accuracy"].tolist() == [0.0] * 6 + [1.0] * 6
    assert lens.df[lens.df.step == T - 1]["error_final"].eq(0).all()
    conv = dyn.convergence(model, x, **kw)
    assert (conv.tables["examples"]["commit_step"] == 6).all()
    # eps = 0 returns at once; a kick of half the state's norm at step 0 dies out by 0.5 a step
    res = dyn.basin(model, x, eps=(0.0, 0.5), steps=[0], samples=2, **kw)
    zero, kick = res.df[res.df.eps == 0.0], res.df[res.df.eps == 0.5]
    assert zero["returns"].all() and not zero["changed"].any() and (zero["recovery_time"] == 0).all()
    assert (zero["perturbation"] == 0).all()
    clean = np.sqrt(2) * (2 - 2 * 0.5 ** (np.arange(T) + 1))
    off = 0.5 * np.sqrt(2) * 0.5 ** np.arange(T)  # ||h'_u - h_u|| after a kick of 0.5 ||h_0|| at step 0
    first = int(np.argmax(off <= 0.01 * np.maximum(1, clean)))
    assert kick["returns"].all() and (kick["recovery_time"] == first).all()
    np.testing.assert_allclose(kick["ratio"], 0.5 ** (T - 1), rtol=1e-3)  # float32 rounding


def test_basin_in_one_forward_equals_one_forward_per_copy():
    x = torch.rand(4, 1) + 0.5
    model = looped(Affine(torch.tensor([[0.9]]), torch.tensor([0.2])))
    kw = dict(readout=lambda h: h, state_hooks=STATE, eps=(0.1, 2.0), steps=3, samples=2,
              forward_kwargs={"steps": 8})
    one, many = dyn.basin(model, x, **kw), dyn.basin(model, x, batch_size=8, **kw)  # 8 rows = one copy
    assert one.meta["forwards"] == 1 and many.meta["forwards"] == 6
    assert one.meta["perturbed_steps"] == [0, 4, 7]  # steps=3: three evenly spaced steps
    assert one.df.equals(many.df)


def test_bad_answers_and_sizes_are_refused_naming_what_is_allowed():
    model = looped(Counter())
    x = torch.zeros(2, 1)
    kw = dict(state_hooks=STATE, readout=counter_readout(3), forward_kwargs={"steps": 3})
    with pytest.raises(ValueError, match="answers='vector'; allowed: 'classes'.*'values'"):
        dyn.iteration_lens(model, x, answers="vector", **kw)
    with pytest.raises(ValueError, match="eps=.*finite sizes >= 0"):
        dyn.basin(model, x, eps=(-1.0,), **kw)
    with pytest.raises(ValueError, match="batch_size=0"):
        dyn.basin(model, x, batch_size=0, **kw)
    with pytest.raises(ValueError, match="answers='values' needs real-valued readout"):
        dyn.iteration_lens(model, x, answers="values", state_hooks=STATE, readout=lambda h: h.long(),
                           forward_kwargs={"steps": 3})
    with pytest.raises(ValueError, match="probe='svm'; allowed: 'logistic', 'ridge'"):
        dyn.probe_transfer(np.zeros((2, 8, 3)), np.arange(8) % 2, probe="svm")
