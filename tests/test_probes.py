from dataclasses import asdict

import numpy as np
import pandas as pd
import pytest
import torch

import probes
from models.reasoner import Reasoner, ReasonerConfig
from probes import reasoner as pr
from workbench.sites import Sites
from workbench.tasks import graph_arith as ga

TASK = ga.GraphArithConfig(n_nodes=6, n_leaves=3, max_depth=2)

pytestmark = pytest.mark.usefixtures("one_thread")


def planted(n=3000, d=20, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    w = rng.normal(size=d)
    return X, w, rng


def test_probe_recovers_a_planted_linear_feature_and_the_control_is_at_chance():
    X, w, rng = planted()
    y = (X @ w > 0).astype(int)
    noise = rng.normal(size=X.shape).astype(np.float32)
    res = probes.fit({"signal": X, "noise": noise}, y)
    sig, noi = res.df.set_index("site").loc["signal"], res.df.set_index("site").loc["noise"]
    assert sig.accuracy > 0.95 and abs(sig.control - sig.chance) < 0.06 and sig.selectivity > 0.4
    assert abs(noi.accuracy - noi.chance) < 0.06  # nothing to read in pure noise
    assert res.value == "selectivity" and res.df.n_test.iloc[0] == 750


def test_ridge_probe_for_a_continuous_target():
    X, w, rng = planted(d=10)
    y = X @ w + 0.1 * rng.normal(size=len(X))
    res = probes.fit({"a": X}, y)
    row = res.df.iloc[0]
    assert row.probe == "ridge" and row.r2 > 0.99 and abs(row.control) < 0.05


def test_control_task_labels_each_type_consistently():
    y = np.arange(100) % 7
    types = np.arange(100) % 10
    c = probes.control_labels(y, types, seed=1)
    for t in range(10):
        assert len(set(c[types == t])) == 1  # one random label per type (Hewitt & Liang)
    assert set(c) <= set(y)
    assert sorted(probes.control_labels(y, None, seed=1)) == sorted(y)  # per-sample: a permutation


def small():
    torch.manual_seed(0)
    return Reasoner(ReasonerConfig(d_model=16, n_heads=2, d_mlp=32, max_steps=8, task=asdict(TASK))).eval()


def test_collect_keeps_the_defining_positions_with_bounded_rows():
    model = small()
    problems = ga.sample(TASK, 10, 0)
    acts = probes.collect(model, pr.batches(model, problems, batch_size=4, per_problem=2, steps=3),
                          Sites("steps.*.blocks.*.hook_resid_post"))
    assert acts.n == 20 and len(acts.data) == 3 * 2
    assert acts.data["steps.1.blocks.0.hook_resid_post"].shape == (20, 16)
    row = acts.rows.iloc[5]
    x = torch.from_numpy(pr.encode_batch(problems, model.cfg)["factors"])
    _, cache = model.run_with_cache(x, steps=3)
    want = cache["steps.1.blocks.0.hook_resid_post"][row.problem, row.pos].numpy()
    np.testing.assert_allclose(acts.data["steps.1.blocks.0.hook_resid_post"][5], want, atol=1e-6)
    enc = ga.encode(problems[row.problem], model.cfg.scheme, model.cfg.name_pool)
    assert enc.role[row.pos] == ga.ROLE_DEFINE and enc.answer[row.pos] == row.value
    heads = probes.collect(model, pr.batches(model, problems[:4], steps=2), Sites("steps.0.blocks.0.attn.hook_z", heads=[1]))
    assert heads.data["steps.0.blocks.0.attn.hook_z[head=1]"].shape == (heads.n, 8)


def _same_rows(fast, plain, atol):
    assert fast.rows.equals(plain.rows) and sorted(fast.data) == sorted(plain.data)
    for label in plain.data:
        np.testing.assert_allclose(fast.data[label], plain.data[label], atol=atol, rtol=0, err_msg=label)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("latent", ["discrete", "continuous"])
def test_reasoner_collect_gives_the_plain_collections_rows(latent, causal):
    torch.manual_seed(0)
    model = Reasoner(ReasonerConfig(d_model=16, n_heads=2, d_mlp=32, max_steps=8, latent=latent, causal=causal,
                                    task=asdict(TASK))).eval()
    problems = ga.sample(TASK, 12, 2)
    sel = Sites("steps.*.blocks.*.hook_resid_post")
    plain = probes.collect(model, pr.batches(model, problems, batch_size=5, per_problem=2, steps=6), sel)
    fast = pr.collect(model, problems, sel, batch_size=5, per_problem=2, steps=6)
    _same_rows(fast, plain, atol=1e-5)
    lengths = np.array([ga.n_tokens(p) for p in problems])
    kept_end = plain.rows.groupby("problem").pos.max().to_numpy() + 1  # tokens up to the last kept position
    if latent == "continuous":  # no codes to settle on: every problem runs every step
        assert fast.meta["forward_steps"] == 12 * 6 and fast.meta["reruns"] == 0
        # causal attention: each problem ran only its tokens up to the last kept position
        assert fast.meta["forward_tokens"] == 6 * (kept_end if causal else lengths).sum()
    else:  # an untrained model does not settle when a trained one would: those problems ran again
        assert fast.meta["reruns"] > 0


def test_reasoner_collect_runs_every_token_for_sites_with_a_key_axis():
    torch.manual_seed(0)
    model = Reasoner(ReasonerConfig(d_model=16, n_heads=2, d_mlp=32, max_steps=8, latent="continuous", causal=True,
                                    task=asdict(TASK))).eval()
    problems = ga.sample(TASK, 8, 3)
    sel = Sites(["steps.*.blocks.0.attn.hook_pattern", "steps.*.blocks.1.hook_resid_post"])
    plain = probes.collect(model, pr.batches(model, problems, batch_size=8, per_problem=1, steps=3), sel)
    fast = pr.collect(model, problems, sel, batch_size=8, per_problem=1, steps=3)
    _same_rows(fast, plain, atol=1e-5)  # patterns over every key, as the whole problem attends
    assert fast.meta["forward_tokens"] == 3 * sum(ga.n_tokens(p) for p in problems)


def test_reasoner_collect_skips_settled_steps_of_the_shipped_model_and_copies_them_exactly():
    import models

    if "reasoner" not in models.zoo_names():
        pytest.skip("no shipped reasoner")
    model = models.load("reasoner")
    task = pr.task_of(model)
    problems = ga.sample(task, 24, np.random.default_rng(5))
    T = model.cfg.steps_for_depth(task.max_depth)
    sel = Sites("steps.*.blocks.*.hook_resid_post")
    plain = probes.collect(model, pr.batches(model, problems, batch_size=24, per_problem=1, steps=T), sel)
    fast = pr.collect(model, problems, sel, per_problem=1, steps=T)
    assert fast.meta["forward_steps"] < 0.8 * 24 * T  # the settled steps were not run
    # nor the tokens after each problem's kept position (causal attention)
    assert fast.meta["forward_tokens"] < 0.5 * T * sum(ga.n_tokens(p) for p in problems)
    assert fast.meta["reruns"] == 0
    _same_rows(fast, plain, atol=1e-4)
    # a problem's last steps are copies, and they are what the full rollout computes there
    last = fast.data[f"steps.{T - 1}.blocks.1.hook_resid_post"]
    np.testing.assert_array_equal(last, fast.data[f"steps.{T - 2}.blocks.1.hook_resid_post"])


def test_site_dependent_target_and_figure():
    model = small()
    problems = ga.sample(TASK, 40, 1)
    acts = probes.collect(model, pr.batches(model, problems, steps=3), "steps.*.blocks.1.hook_resid_post")
    target = pr.computed(acts.rows)
    res = probes.fit(acts, target, target_name="computed", groups="problem")
    assert list(res.df.step) == [0, 1, 2] and (res.df.target == "computed").all()
    fill = acts.rows.fill_step.to_numpy()
    assert res.df.chance.iloc[0] == pytest.approx(max((fill <= 1).mean(), (fill > 1).mean()), abs=0.15)
    fig = res.figure()
    assert len(fig.data) >= 2
    vals = probes.fit(acts, "value", types="variable", sites="steps.2.*")
    assert len(vals.df) == 1 and vals.meta["control_types"] == "variable"


def test_bad_inputs_give_clear_errors():
    X, w, _ = planted(n=100)
    y = (X @ w > 0).astype(int)
    with pytest.raises(ValueError, match="probe='svm'"):
        probes.fit({"a": X}, y, probe="svm")
    with pytest.raises(ValueError, match="one entry per row"):
        probes.fit({"a": X}, y[:50])
    with pytest.raises(ValueError, match="same number of rows"):
        probes.fit({"a": X, "b": X[:10]}, y)
    with pytest.raises(ValueError, match="selects none"):
        probes.fit({"a": X}, y, sites="steps.*")
    with pytest.raises(ValueError, match="not a column"):
        probes.fit({"a": X}, "value")
    with pytest.raises(ValueError, match=r"jobs=0; allowed: a whole number >= 1"):
        probes.fit({"a": X}, y, jobs=0)


def test_sites_fitted_in_threads_give_the_same_table_in_site_order():
    X, w, rng = planted(n=800, d=8)
    y = (X @ w > 0).astype(int)
    # ever noisier copies of the features: the probe's accuracy falls from site to site
    data = {f"s{i}": X + rng.normal(scale=0.8 * i, size=X.shape).astype(np.float32) for i in range(6)}
    one, three = probes.fit(data, y, jobs=1), probes.fit(data, y, jobs=3)
    assert list(three.df.site) == [f"s{i}" for i in range(6)]
    pd.testing.assert_frame_equal(one.df, three.df)
    assert three.df.accuracy.iloc[0] > 0.95 > three.df.accuracy.iloc[-1]


def test_command_line_and_study_write_csv_and_html(tmp_path):
    from apps.commands import analysis
    from probes import reasoner_values
    from workbench import checkpoints

    checkpoints.save(tmp_path / "m", small())
    out = tmp_path / "out"
    assert analysis.main(["probe", str(tmp_path / "m"), "--n", "24", "--targets", "value", "computed",
                          "--out", str(out)]) == 0
    assert {"probe_value.csv", "probe_value.html", "probe_computed.csv", "probe.csv"} <= {p.name for p in out.iterdir()}
    reasoner_values.main(["--model", str(tmp_path / "m"), "--n", "24", "--out", str(tmp_path / "study")])
    import pandas as pd

    table = pd.read_csv(tmp_path / "study" / "values.csv")
    assert set(table.target) == {"value", "computed", "depth"} and (tmp_path / "study" / "depth.html").exists()


def test_collect_rnn_states_without_a_position_axis():
    from models.act import ACT, ACTConfig

    torch.manual_seed(0)
    model = ACT(ACTConfig(input_size=6, hidden=12, cell="gru", max_ponder=4)).eval()
    x = torch.randint(0, 2, (40, 1, 6)).float()
    parity = (x[:, 0].sum(1) % 2).long().numpy()
    batches = [probes.ProbeBatch((x[i:i + 10],), {}, np.arange(10), None, {"parity": parity[i:i + 10]})
               for i in range(0, 40, 10)]
    acts = probes.collect(model, batches, "time.0.hook_state")
    assert acts.data["time.0.hook_state"].shape == (40, 12)
    res = probes.fit(acts, "parity")
    assert res.df.probe.item() == "logistic" and 0 <= res.df.accuracy.item() <= 1


def test_warp_thetas_carry_the_physical_parameters_as_targets():
    from models.warp import Warp, WarpConfig
    from probes import warp as pw
    from workbench.tasks import dynamics as dy

    task = dy.DynamicsConfig(system="msd", length=16, context=4)
    torch.manual_seed(0)
    model = Warp(WarpConfig(d_in=2, seq_len=16, task=asdict(task))).eval()
    acts = pw.collect_thetas(model, n=60, stride=5, batch_size=25)
    assert list(acts.rows.columns) == ["item", "m", "c", "k"] and acts.n == 60
    assert sorted(acts.data) == [f"time.{t}.hook_theta" for t in (0, 10, 15, 5)]
    res = probes.fit(acts, "k")
    assert res.df.probe.iloc[0] == "ridge" and list(res.df.time) == [0, 5, 10, 15]


# ------------------------------------------------------ results that cannot mislead
def test_selectivity_is_bounded_when_the_control_r2_is_negative():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 60)).astype(np.float32)  # few rows, many features: the control overfits
    y = X @ rng.normal(size=60)
    res = probes.fit({"a": X}, y, alpha=0.1)
    row = res.df.iloc[0]
    assert row.control < 0  # worse than predicting the mean
    assert -1 <= row.selectivity <= 1 and row.selectivity == pytest.approx(max(row.r2, 0) - 0.0)
    assert res.df.status.tolist() == ["ok"]


def test_constant_targets_are_counted_and_never_best():
    X, w, rng = planted(n=400, d=8)
    y_real = (X @ w > 0).astype(int)

    def target(site):  # one site whose target never varies, like "halts at ponder step 0"
        return np.zeros(len(X), int) if site.name == "steps.0.hook_x" else y_real

    acts = {"steps.0.hook_x": X, "steps.1.hook_x": X, "steps.2.hook_x": rng.normal(size=X.shape)}
    res = probes.fit(acts, target, target_name="t")
    const = res.df.set_index("site").loc["steps.0.hook_x"]
    assert const.accuracy == 1.0 and const.chance == 1.0 and const.status == "constant target"
    assert res.counts() == {"constant target": 1, "ok": 2}
    assert res.best("accuracy").site == "steps.1.hook_x"  # not the trivial 1.000
    assert "steps.0.hook_x" not in set(res.top(10).site)
    text = res.summary()
    assert "best site by accuracy: steps.1.hook_x" in text and "1 constant target" in text
    fig = res.figure()
    assert any(t.name and t.name.startswith("constant target (1 sites") for t in fig.data)


def test_act_halts_at_ponder_step_zero_is_trivial_not_best():
    import models
    from probes import act as pa

    model = models.load("act-parity")
    acts = pa.collect_states(model, n=300, seed=0, batch_size=300)
    res = probes.fit(acts, pa.halts(acts.rows), sites="time.*.ponder.*", target_name="halts")
    first = res.df[res.df.ponder == 0].iloc[0]
    assert first.status == "constant target"  # nothing halts at its first ponder step
    best = res.best("accuracy")
    assert best is not None and best.status == "ok" and best.chance < 1.0
    assert f"best site by accuracy: {best.site}" in res.summary()
