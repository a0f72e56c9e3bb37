from dataclasses import asdict

import numpy as np
import pytest
import torch

from models.reasoner import Reasoner, ReasonerConfig
from probes.reasoner import codebook_report
from workbench import codebook
from workbench.tasks import graph_arith as ga

pytestmark = pytest.mark.usefixtures("one_thread")


def test_usage_perplexity_and_dead_codes_on_hand_made_codes():
    codes = np.array([[0, 0, 1, 1],
                      [0, 1, 2, 3],
                      [4, 4, 4, 4]])
    rep = codebook.analyze(codes, n_codes=5)
    df = rep.df.set_index("step")
    assert df.used.tolist() == [2, 4, 1] and df.dead.tolist() == [3, 1, 4]
    np.testing.assert_allclose(df.perplexity, [2.0, 4.0, 1.0])
    np.testing.assert_allclose(df.entropy_bits, [1.0, 2.0, 0.0], atol=1e-12)
    u = rep.tables["usage"]
    assert u[(u.step == 1) & (u.code == 3)]["count"].item() == 1 and len(u) == 15


def test_accuracy_confusion_nmi_and_depth_table():
    truth = np.array([0, 1, 2, 3])
    codes = np.array([[9, 9, 9, 9],   # nothing decoded yet
                      [0, 1, 9, 9],   # depth-0 slots right
                      [1, 2, 3, 0]])  # a relabelling: wrong values, full information
    rep = codebook.analyze(codes, n_codes=10, truth=truth, depth=np.array([0, 0, 1, 1]))
    df = rep.df.set_index("step")
    assert df.accuracy.tolist() == [0.0, 0.5, 0.0]
    # step 1: I(truth; code) = H(code) = 1.5 bits, H(truth) = 2 bits -> NMI = 1.5 / mean(2, 1.5) = 6/7
    np.testing.assert_allclose(df.nmi, [0.0, 6 / 7, 1.0], atol=1e-9)
    acc = rep.tables["accuracy"].set_index(["step", "depth"]).accuracy
    assert acc[(1, 0)] == 1.0 and acc[(1, 1)] == 0.0
    conf = rep.tables["confusion"]
    assert conf[(conf.step == 0) & (conf.code == 9)]["count"].sum() == 4
    per_step = codebook.analyze(codes, n_codes=10, truth=np.stack([truth] * 3))
    assert per_step.df.accuracy.tolist() == df.accuracy.tolist()


def test_embedding_geometry_fourier_and_drift():
    p, d = 23, 8
    v = np.arange(p)
    E = np.stack([np.cos(2 * np.pi * 5 * v / p), np.sin(2 * np.pi * 5 * v / p)] + [np.zeros(p)] * (d - 2), 1)
    E = np.concatenate([E, np.ones((2, d))])  # N/A and EMPTY
    spec = codebook.fourier_spectrum(E, p)
    assert spec.set_index("frequency").power[5] == pytest.approx(1.0)
    codes = np.array([[0, 5, 7], [0, 5, 7]])
    off = E[codes[0]].copy()
    off[:, 2:] = -0.5  # step 1 leaves the codebook along directions no embedding uses
    latents = np.stack([E[codes[0]], off])
    rep = codebook.analyze(codes, embeddings=E, modulus=p, latents=latents, labels=[str(i) for i in range(p + 2)])
    assert rep.df.distance.iloc[0] == pytest.approx(0.0, abs=1e-5)
    assert rep.df.distance.iloc[1] == pytest.approx(np.sqrt((d - 2) * 0.25), rel=1e-4)
    assert list(rep.tables["pca"].columns) == ["code", "pc1", "pc2", "pc3"] and rep.meta["pca_explained"][0] > 0.4
    for which in ("usage", "pca", "fourier", "drift"):
        assert rep.figure(which=which).data


def test_kmeans_codebook_for_states_without_a_bottleneck():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 5)) * 10
    truth = rng.integers(0, 3, size=(4, 60))
    states = centres[truth] + rng.normal(size=(4, 60, 5)) * 0.1
    rep = codebook.analyze_states(states, k=3, truth=truth)
    assert (rep.df.accuracy == 1.0).all() and (rep.df.nmi > 0.99).all()
    assert (rep.df.relative_distance < 0.05).all() and "k-means" in rep.meta["codebook"]


def test_reasoner_report_has_truth_per_step_and_repair_rate():
    task = ga.GraphArithConfig(n_nodes=6, n_leaves=3, max_depth=2)
    torch.manual_seed(0)
    model = Reasoner(ReasonerConfig(d_model=16, n_heads=2, d_mlp=32, max_steps=8, task=asdict(task))).eval()
    rep = codebook_report(model, ga.sample(task, 6, 0), steps=3)
    assert rep.meta["n_codes"] == 25 and len(rep.df) == 3
    assert set(rep.meta["repair"]) == {"repair_rate", "corrupted"}
    conf = rep.tables["confusion"]
    assert (conf[conf.step == 0].truth <= 24).all() and "drift" in rep.tables
    assert rep.tables["pca"].code.tolist()[-2:] == ["N/A", "EMPTY"]


def test_bad_inputs_give_clear_errors():
    with pytest.raises(ValueError, match="allowed 0..3"):
        codebook.analyze(np.array([[0, 5]]), n_codes=4)
    with pytest.raises(ValueError, match="integers"):
        codebook.analyze(np.array([[0.5, 1.0]]))
    with pytest.raises(ValueError, match="truth must be"):
        codebook.analyze(np.array([[0, 1]]), truth=np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="embeddings must be"):
        codebook.analyze(np.array([[0, 1]]), n_codes=3, embeddings=np.ones((2, 4)))
    with pytest.raises(ValueError, match="which="):
        codebook.analyze(np.array([[0, 1]])).figure(which="spectrum")


def test_command_line_writes_the_report(tmp_path):
    from apps.commands import analysis
    from workbench import checkpoints

    task = ga.GraphArithConfig(n_nodes=6, n_leaves=3, max_depth=2)
    torch.manual_seed(0)
    checkpoints.save(tmp_path / "m", Reasoner(ReasonerConfig(d_model=16, n_heads=2, d_mlp=32, max_steps=8,
                                                             task=asdict(task))))
    out = tmp_path / "out"
    assert analysis.main(["codebook", str(tmp_path / "m"), "--n", "8", "--out", str(out)]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"codebook.csv", "codebook.html", "codebook_confusion.csv", "codebook_fourier.html"} <= names


def test_post_hoc_codebook_on_act_ponder_states():
    from models.act import ACT, ACTConfig
    from workbench.hooks import stack

    torch.manual_seed(0)
    model = ACT(ACTConfig(input_size=6, hidden=12, cell="gru", act=False, fixed_steps=3)).eval()
    x = torch.randint(0, 2, (50, 1, 6)).float()
    _, cache = model.run_with_cache(x)
    states = stack(cache, "hook_state", loop="time.0.ponder")  # [3 ponder steps, 50, 12]
    truth = np.broadcast_to((x[:, 0].sum(1) % 2).long().numpy(), (3, 50))
    rep = codebook.analyze_states(states, k=4, truth=truth)
    assert len(rep.df) == 3 and rep.meta["n_codes"] == 4 and (rep.df.accuracy >= 0.5).all()
