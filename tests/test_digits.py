import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_digits

from workbench.tasks import digits as dg

CFG = dg.DigitsConfig()


def test_split_is_deterministic_disjoint_complete_and_stratified():
    train, test = dg.load(CFG, "train"), dg.load(CFG, "test")
    again = dg.load(dg.DigitsConfig(), "test")
    assert np.array_equal(test.index, again.index)
    assert (len(train), len(test)) == (1347, 450)
    assert not set(train.index) & set(test.index)
    assert sorted(set(train.index) | set(test.index)) == list(range(1797))
    share = np.bincount(test.labels, minlength=10) / len(test)
    assert np.abs(share - 0.1).max() < 0.02
    other = dg.load(dg.DigitsConfig(split_seed=1), "test")
    assert not np.array_equal(other.index, test.index)


def test_rows_are_the_package_images():
    raw = load_digits()
    test = dg.load(CFG, "test")
    assert np.array_equal(test.pixels, raw.data[test.index].astype(int))
    assert np.array_equal(test.labels, raw.target[test.index])
    for d in dg.sample(CFG, 5, seed=0, split="test"):
        assert d.label == raw.target[d.index] and d.pixels == tuple(raw.data[d.index].astype(int))


def test_sequences_scale_and_shape():
    x = dg.sequences(dg.load(CFG, "test").pixels)
    assert x.shape == (450, 64, 1) and x.dtype == np.float32
    assert x.min() == 0.0 and x.max() == 1.0
    with pytest.raises(ValueError, match=r"pixels must be \[n, 64\]"):
        dg.sequences(np.zeros((3, 8, 8)))


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_text_round_trip(seed):
    for d in dg.sample(CFG, 3, seed):
        assert dg.parse_digit(dg.format_digit(d)) == d


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.replace("digit ", "digits ", 1), r"line 1, column 1: header"),
    (lambda s: "digit 12" + s[7:], r"line 1, column 7: label '12'; allowed 0..9"),
    (lambda s: s.replace(" index ", " index x", 1), r"line 1, .*index 'x\d+' is not"),
    (lambda s: s.rsplit("\n", 2)[0] + "\n", r"line 9, column 1: 7 pixel rows; expected 8"),
    (lambda s: s.rsplit("\n", 2)[0] + "\n0 0 0 0 0 0 0\n", r"line 9, column 1: 7 pixels; expected 8"),
    (lambda s: s.rsplit("\n", 2)[0] + "\n0 0 17 0 0 0 0 0\n", r"line 9, column 5: pixel '17'; allowed integers 0..16"),
    (lambda s: "", r"line 1, column 1: empty"),
])
def test_parse_errors_name_line_column_and_rule(edit, message):
    text = dg.format_digit(dg.sample(CFG, 1, 0)[0])
    with pytest.raises(ValueError, match=message):
        dg.parse_digit(edit(text))


def test_reference_classifier_and_completion_score():
    assert dg.nearest_neighbour_accuracy(CFG) > 0.95
    truth = dg.sequences(dg.load(CFG, "test").pixels[:4])
    assert dg.completion_mse(truth, truth[:, 32:], 32) == 0.0
    with pytest.raises(ValueError, match="expected"):
        dg.completion_mse(truth, truth[:, 30:], 32)


def test_config_validation():
    with pytest.raises(ValueError, match="context=64"):
        dg.DigitsConfig(context=64)
    with pytest.raises(ValueError, match="test_fraction"):
        dg.DigitsConfig(test_fraction=1.5)
    with pytest.raises(ValueError, match="split='val'"):
        dg.load(CFG, "val")


# ------------------------------------------------ validation split and the final test report
def test_validation_split_is_carved_from_train_and_disjoint_from_test():
    from models.warp_data import DIGIT_SPLITS, digits_split

    parts = {s: digits_split(CFG, s) for s in DIGIT_SPLITS}
    fit, val, test = (set(parts[s].index) for s in DIGIT_SPLITS)
    train = set(dg.load(CFG, "train").index)
    assert not fit & val and not fit & test and not val & test
    assert fit | val == train and sorted(fit | val | test) == list(range(1797))
    assert set(parts["test"].index) == set(dg.load(CFG, "test").index)
    assert (len(fit), len(val), len(test)) == (1077, 270, 450)
    share = np.bincount(parts["val"].labels, minlength=10) / len(val)
    assert np.abs(share - 0.1).max() < 0.02  # stratified by label
    assert np.array_equal(digits_split(dg.DigitsConfig(), "val").index, parts["val"].index)  # deterministic
    assert not np.array_equal(digits_split(dg.DigitsConfig(split_seed=1), "val").index, parts["val"].index)
    with pytest.raises(ValueError, match=r"split='dev'"):
        digits_split(CFG, "dev")


def test_training_batches_and_training_evaluation_never_touch_val_or_test():
    import torch

    from models.recipes.warp import evaluate_task
    from models.warp import Warp, WarpConfig
    from models.warp_data import Forcing, digits_batch, digits_split

    fit = {tuple(p) for p in digits_split(CFG, "fit").pixels}
    held = {tuple(p) for s in ("val", "test") for p in digits_split(CFG, s).pixels} - fit  # duplicates aside
    batch = digits_batch(CFG, 512, np.random.default_rng(0), 0, Forcing(min=1.0))
    rows = {tuple(np.rint(r[:, 0].numpy() * dg.MAX_VALUE).astype(int)) for r in batch["x"]}
    assert rows <= fit and not rows & held
    torch.manual_seed(0)
    model = Warp(WarpConfig(n_classes=10, seq_len=64, root_width=2, root_depth=1, init="learned", dt=1 / 32))
    ev = evaluate_task(model, CFG, 8, [0, 1])
    assert ev["split"] == "val" and ev["n"] == 270


def test_wilson_interval():
    from models.warp_eval import wilson_interval

    lo, hi = wilson_interval(411, 450)
    assert (round(lo, 4), round(hi, 4)) == (0.8837, 0.936)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(0, 10)[1] == pytest.approx(0.2775, abs=1e-4)
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0)
    assert wilson_interval(10, 10)[0] == pytest.approx(0.7225, abs=1e-4)
    with pytest.raises(ValueError, match="0 <= k <= n"):
        wilson_interval(11, 10)


def test_digits_test_command_reports_the_interval_and_the_baselines(tmp_path):
    import pandas as pd
    import torch

    from apps.cli import main
    from models.warp import Warp, WarpConfig
    from workbench import checkpoints

    torch.manual_seed(0)
    folder, other = tmp_path / "tiny", tmp_path / "other"
    for f in (folder, other):
        checkpoints.save(f, Warp(WarpConfig(n_classes=10, seq_len=64, root_width=2, root_depth=1, init="learned",
                                            dt=1 / 32, task={"test_fraction": 0.25, "split_seed": 0, "context": 32})))
    assert main(["eval", "warp", "--models", str(folder), "--digits-test", "--out", str(tmp_path / "out")]) == 0
    table = pd.read_csv(tmp_path / "out" / "digits_test.csv")
    assert list(table["model"])[1:] == ["logistic regression", "k-NN"]
    assert (table["n"] == 450).all() and table["val_accuracy"].notna().all()
    assert ((table.ci95_low <= table.test_accuracy) & (table.test_accuracy <= table.ci95_high)).all()
    assert table.loc[1:, "test_accuracy"].min() > 0.95  # the baselines: how hard the split is
    # the test split is read for one chosen model, not for a comparison between candidates
    assert main(["eval", "warp", "--models", f"{folder},{other}", "--digits-test", "--out", str(tmp_path)]) != 0
