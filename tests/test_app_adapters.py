"""The explorer's adapters (``apps/zoo.py``, ``apps/adapters``) on tiny checkpoints: right numbers, clear errors."""

import numpy as np
import pandas as pd
import pytest
import torch

import models
from apps import zoo
from apps.adapters import act as aa
from apps.adapters import analysis as an
from apps.adapters import reasoner as ar
from apps.adapters import warp as aw
from tests import app_models
from workbench.tasks import graph_arith as ga

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return app_models.all_families(tmp_path_factory.mktemp("app_models"))


@pytest.fixture(scope="module")
def loaded(folders):
    return {family: models.load(folder) for family, folder in folders.items()}


# -------------------------------------------------------------------- zoo
def test_family_comes_from_the_config_class(folders):
    assert {f: zoo.family_of(p) for f, p in folders.items()} == {"reasoner": "reasoner", "act": "act", "warp": "warp",
                                                                 "warp-digits": "warp"}
    with pytest.raises(ValueError, match="unknown model family"):
        zoo.names_of("transformer")
    assert set(zoo.names_of("act")) <= set(models.zoo_names())


def test_ood_table_and_headline(folders):
    ood = zoo.ood_table([str(folders["reasoner"])])
    assert list(ood.n_nodes) == [4, 8, 16] and set(ood.model) == {str(folders["reasoner"])}
    assert zoo.ood_table([str(folders["act"])]).empty
    assert zoo.headline(folders["act"]) == {"headline": "", "metric": "error", "value": 0.5, "seed_mean": None,
                                           "spread": None, "seeds": None}
    assert zoo.training_size([str(folders["reasoner"])]) == 8
    assert list(zoo.zoo_table().columns) == ["model", "family", "headline", "metric", "value", "seed_mean", "spread",
                                             "seeds"]


# --------------------------------------------------------------- reasoner
TEXT = "20 = x_7; 3 = x_1; x_7 + x_1 = x_23; x_23 = x_5"


@pytest.mark.parametrize("text, rule", [("", "empty problem"), ("20 = x_7; x_7 + x_9 = x_2", "never defined"),
                                        ("30 = x_7", "outside Z_23"), ("20 = x_7; 3 = x_7", "defined twice"),
                                        ("20 == x_7", "malformed"), ("2 = x_7 $", "unknown token")])
def test_malformed_problems_name_the_rule(loaded, text, rule):
    with pytest.raises(ValueError, match=rule):
        ar.parse_problem(loaded["reasoner"], text)


def test_state_table_follows_the_rollout(loaded):
    model = loaded["reasoner"]
    problem = ar.parse_problem(model, TEXT)
    ro = ar.rollout(model, problem, ar.default_steps(model, problem))
    assert ro.codes.shape == (ro.steps, ga.n_tokens(problem))
    table = ar.state_table(ro)
    assert set(table.slot) == {"x_7", "x_1", "x_23", "x_5"} and len(table) == 4 * (ro.steps + 1)
    first = table[table.step == -1]
    assert (first.status == "not yet computed").all()  # every slot starts EMPTY
    final = table[table.step == ro.steps - 1].set_index("slot")
    assert final.loc["x_5", "truth"] == str(problem.value_of(5))
    assert (final.status == np.where(final.value == final.truth, "correct",
                                     np.where(final.value == "EMPTY", "not yet computed", "wrong"))).all()
    assert len(ar.state_table(ro, operands=True)) > len(table)  # one-hop scheme: operand slots too


def test_step_lens_last_layer_is_what_the_model_decodes(loaded):
    model = loaded["reasoner"]
    problem = ar.parse_problem(model, TEXT)
    ro = ar.rollout(model, problem, 3)
    lens = ar.step_lens(model, problem, 3)
    last = lens[lens.layer == model.cfg.n_layers]
    assert (last.code.to_numpy() == ro.codes[last.step.to_numpy(), last.pos.to_numpy()]).all()
    assert set(ar.lens_overview(lens).layer_name) == {"input", "block 0", "block 1"}


def test_attention_rows_are_distributions(loaded):
    model = loaded["reasoner"]
    problem = ar.parse_problem(model, TEXT)
    pattern = ar.attention(model, problem, 3, step=2, layer=1)
    assert pattern.shape == (4, ga.n_tokens(problem), ga.n_tokens(problem))
    assert np.allclose(pattern.sum(-1), 1, atol=1e-5)
    assert set(ar.reads(ga.encode(problem)).kind) == {"operand", "definition"}
    with pytest.raises(ValueError, match="step=3 is out of range; allowed 0..2"):
        ar.attention(model, problem, 3, step=3, layer=0)


def test_intervention_writes_the_value_after_that_step(loaded):
    model = loaded["reasoner"]
    problem = ar.parse_problem(model, TEXT)
    T = 4
    edited = ar.intervene(model, problem, T, variable=23, value=11, at_step=T - 1)
    table = ar.state_table(edited).set_index(["slot", "step"])
    assert table.loc[("x_23", T - 1), "value"] == "11"  # the last step's codes are the output
    changed = ar.changed_cells(ar.state_table(ar.rollout(model, problem, T)), ar.state_table(edited))
    assert set(changed.step) <= {T - 1}
    with pytest.raises(ValueError, match="allowed 0..22"):
        ar.intervene(model, problem, T, variable=23, value=23, at_step=0)
    with pytest.raises(ValueError, match="x_99 is not a variable"):
        ar.intervene(model, problem, T, variable=99, value=1, at_step=0)


# -------------------------------------------------------------------- ACT
def test_act_input_and_halting_patches(loaded):
    model = loaded["act"]
    with pytest.raises(ValueError, match="not an entry"):
        aa.parse_input(model, "+0x000")
    with pytest.raises(ValueError, match="exactly 6"):
        aa.parse_input(model, "+0")
    x = aa.parse_input(model, aa.sample_text(model, 0))
    steps = aa.per_step(model, x)
    assert list(steps.columns) == ["t", "item", "N", "R", "ponder_cost", "prediction", "target", "correct"]
    halt_now = aa.per_step(model, x, aa.halt_patch(0, 30.0, model.cfg.max_ponder))
    never = aa.per_step(model, x, aa.halt_patch(None, -30.0, model.cfg.max_ponder))
    assert int(halt_now.N[0]) == 1 and int(never.N[0]) == model.cfg.max_ponder
    trace = aa.trace(model, x, aa.halt_patch(0, 30.0, model.cfg.max_ponder))
    assert list(trace.n) == [1]
    with pytest.raises(ValueError, match="ponder step 6 is out of range"):
        aa.halt_patch(6, 1.0, model.cfg.max_ponder)
    table = aa.ponder_vs_difficulty(model, 40, 0)
    assert "mean_ponder" in table and table.n.sum() == 40


# ------------------------------------------------------------------- WARP
def test_forecast_and_root_curves(loaded):
    model = loaded["warp"]
    traj = aw.sample(model, 0)
    run = aw.forecast_run(model, traj)
    assert run.forecast.shape == (32 - 8, 2) and run.thetas.shape == (31, model.cfg.d_theta)
    curves, marks = aw.root_curves(model, run, [3, 10])
    assert set(curves.output) == {"next x", "next v", "m", "c", "k"} and len(marks) == 2 * 5
    # the mark at a step's own tau is the model's prediction at that step
    at10 = marks[(marks.step == 10) & (marks.output.isin(["next x", "next v"]))].value.to_numpy()
    assert np.allclose(at10, run.forecast[10 - 7], atol=1e-5)
    with pytest.raises(ValueError, match="choose at least one step"):
        aw.root_curves(model, run, [])
    with pytest.raises(ValueError, match="out of range"):
        aw.forecast_run(model, traj, context=32)
    coords, explained = aw.pca(run, 2)
    assert coords.shape == (31, 2) and np.isfinite(explained).all()


def test_digit_completion_and_class(loaded):
    model = loaded["warp-digits"]
    assert aw.is_digits(model) and not aw.is_digits(loaded["warp"])
    run = aw.digit_run(model, 3)
    assert run.truth.shape == (64, 1) and run.forecast.shape == (32, 1) and run.thetas.shape == (63, model.cfg.d_theta)
    assert 0 <= run.predicted < 10 and 0 <= run.label < 10
    curves, _ = aw.root_curves(model, run, [0, 40])
    assert set(curves.output) == {"next pixel"}
    with pytest.raises(ValueError, match="digit index 5000 is out of range"):
        aw.digit_run(model, 5000)
    with pytest.raises(ValueError, match="not on a dynamical system"):
        aw.sample(model, 0)


# --------------------------------------------------------------- analyses
def test_sites_and_axes_from_text():
    assert an.parse_axis("each", "positions") == "each" and an.parse_axis(" ", "heads") is None
    assert an.parse_axis("0, 3", "positions") == [0, 3]
    with pytest.raises(ValueError, match="comma-separated integers"):
        an.parse_axis("first", "positions")
    with pytest.raises(ValueError, match="no sites"):
        an.sites("  ")


def test_patching_probing_codebook_on_tiny_models(loaded):
    model = loaded["reasoner"]
    with pytest.raises(ValueError, match="metric"):
        an.setup(model, "reasoner", 1, 0, "accuracy")
    s = an.setup(model, "reasoner", 1, 0, "clean answer probability", n_nodes=6)
    res = an.run_patching(model, s, an.sites("steps.*.bottleneck.hook_codes", "each"))
    assert {"step", "pos", "score"} <= set(res.df.columns)
    acts = an.collect(model, "reasoner", 12, 0, "steps.*.blocks.1.hook_resid_post", n_nodes=6)
    probe = an.fit_probe(model, "reasoner", acts, "computed")
    assert "selectivity" in probe.df
    with pytest.raises(ValueError, match="target 'colour'"):
        an.fit_probe(model, "reasoner", acts, "colour")
    rep = an.codebook(loaded["act"], "act", 40, 0, k=4)
    assert {"perplexity", "accuracy"} <= set(rep.df.columns)
    with pytest.raises(ValueError, match="n=5 is out of range"):
        an.codebook(loaded["act"], "act", 5, 0)


def test_headline_carries_the_spread_over_seeds(tmp_path):
    import json
    import shutil

    from apps.views.home import headline_figure

    src = models.resolve("act-parity")
    folder = tmp_path / "act-seeds"
    shutil.copytree(src, folder)
    metrics = json.loads((folder / "metrics.json").read_text())
    metric = metrics["headline"]["metric"]
    metrics["seeds"] = {"metric": metric, "values": [0.1, 0.2, 0.3]}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    head = zoo.headline(folder)
    assert head["seeds"] == 3 and abs(head["spread"] - 0.1) < 1e-12  # sample sd of 0.1, 0.2, 0.3
    assert abs(head["seed_mean"] - 0.2) < 1e-12
    metrics["seeds"] = {"metric": "another metric", "values": [0.1, 0.2]}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    assert zoo.headline(folder)["spread"] is None  # a spread of another metric is not this one's
    table = pd.DataFrame([{"model": "a", "family": "ACT", "metric": metric, "value": 0.02, "seed_mean": 0.2,
                           "spread": 0.1, "seeds": 3},
                          {"model": "b", "family": "ACT", "metric": metric, "value": 0.4, "seed_mean": None,
                           "spread": None, "seeds": None}])
    bar, mean = headline_figure(table).data
    assert bar.text[0] == "0.02 (over 3 seeds: 0.2 ± 0.1)" and bar.text[1] == "0.4"
    assert list(mean.y) == ["a"] and list(mean.x) == [0.2] and list(mean.error_x.array) == [0.1]
