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
