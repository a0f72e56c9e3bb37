import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.tasks import parity as par


def count_parity(vector) -> int:
    """Independent ground truth: parity through the string of signs."""
    return par.format_vector(vector).count("+") & 1


@st.composite
def configs(draw):
    size = draw(st.integers(1, par.MAX_SIZE))
    lo = draw(st.integers(1, size))
    hi = draw(st.integers(lo, size))
    return par.ParityConfig(size=size, min_nonzero=lo, max_nonzero=hi)


@settings(max_examples=60, deadline=None)
@given(configs(), st.integers(0, 2**32 - 1))
def test_samples_follow_the_config_and_round_trip(config, seed):
    s = par.sample(config, 20, seed)
    assert s.vectors.shape == (20, config.size)
    assert set(np.unique(s.vectors)) <= {-1, 0, 1}
    nonzero = (s.vectors != 0).sum(1)
    assert (nonzero == s.n_nonzero).all()
    assert ((config.min_nonzero <= nonzero) & (nonzero <= config.hi)).all()
    for i in range(len(s)):
        p = s[i]
        assert p.target == count_parity(p.vector) == par.solve(p.vector)
        assert par.parse(par.format_vector(p.vector), size=config.size) == p


def test_all_difficulties_and_both_signs_occur():
    s = par.sample(par.ParityConfig(), 4000, 0)
    assert set(s.n_nonzero.tolist()) == set(range(1, 17))
    assert abs(s.target.mean() - 0.5) < 0.05
    assert (s.vectors == 1).sum() == pytest.approx((s.vectors == -1).sum(), rel=0.05)


def test_solver_by_hand():
    assert par.solve([1, 0, -1, 1, 1]) == 1
    assert par.solve([-1, -1, 0]) == 0
    assert par.parse("+0-0 ++00 -000 0+0-").target == 0  # four +1s


def test_sampling_is_seeded():
    c = par.ParityConfig()
    assert (par.sample(c, 8, 3).vectors == par.sample(c, 8, 3).vectors).all()
    assert not (par.sample(c, 8, 3).vectors == par.sample(c, 8, 4).vectors).all()


@pytest.mark.parametrize("text, message", [
    ("+0-", "3 entries; a vector has exactly 16"),
    ("+" * 17, "character 16: more than 16 entries"),
    ("+0-0++00-0000+02", "character 15: '2' is not an entry"),
    ("+0-0++00-0x00+00", "character 10: 'x' is not an entry"),
])
def test_malformed_text_names_position_and_rule(text, message):
    with pytest.raises(ValueError, match="character \\d+") as err:
        par.parse(text, size=16)
    assert message in str(err.value)


def test_bad_vectors_are_rejected():
    with pytest.raises(ValueError, match=r"shape \[n, 16\]; got \[2, 15\]"):
        par.check_vectors(np.zeros((2, 15)), 16)
    with pytest.raises(ValueError, match="entry 3 of vector 1 is 2; allowed values: -1, 0, 1"):
        par.check_vectors(np.array([[0] * 16, [0, 0, 0, 2] + [0] * 12]), 16)
    with pytest.raises(ValueError, match="allowed values"):
        par.from_vectors([[0.5] + [0] * 15])
    assert par.from_vectors([1, 1, -1, 0]).target.tolist() == [0]


@pytest.mark.parametrize("kwargs, message", [
    (dict(size=0), "size=0 is out of range; allowed 1..64"),
    (dict(size=65), "allowed 1..64"),
    (dict(size=8, min_nonzero=0), "min_nonzero"),
    (dict(size=8, max_nonzero=9), "max_nonzero"),
])
def test_bad_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        par.ParityConfig(**kwargs)
