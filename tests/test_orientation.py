import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.tasks import orientation as ori

finite = dict(allow_nan=False, allow_infinity=False)
distributions = st.one_of(
    st.just(ori.UNIFORM),
    st.builds(
        ori.biased,
        adapter=st.floats(-90, 90, exclude_max=True, **finite),
        weight=st.floats(1e-6, 1, exclude_max=True, **finite),
        width=st.one_of(st.just(0.0), st.floats(ori.MIN_WIDTH, 45, exclude_max=True, **finite)),
    ),
)


@settings(max_examples=200, deadline=None)
@given(distributions)
def test_text_format_round_trips(dist):
    text = ori.format_distribution(dist)
    assert ori.parse(text) == dist
    assert ori.format_distribution(ori.parse(text)) == text
    assert ori.parse("  " + text.replace(" ", "   ") + "\n") == dist  # whitespace is free


def test_parser_fills_defaults_and_reads_examples():
    assert ori.parse("uniform") == ori.UNIFORM
    assert ori.parse("biased") == ori.biased(0.0, 0.5, 0.0)
    assert ori.parse("biased width=5 adapter=-30") == ori.biased(-30.0, 0.5, 5.0)
    assert ori.format_distribution(ori.biased(12.5, 0.25, 0)) == "biased adapter=12.5 weight=0.25 width=0"


@pytest.mark.parametrize("text, position, rule", [
    ("", 0, "empty distribution"),
    ("gaussian adapter=0", 0, "unknown distribution kind 'gaussian'"),
    ("uniform adapter=0", 8, "unknown key 'adapter' for 'uniform'; allowed keys: none"),
    ("biased adaptor=0", 7, "unknown key 'adaptor'.*allowed keys: adapter, weight, width"),
    ("biased adapter 0", 7, "expected key=value, got 'adapter'"),
    ("biased adapter=abc", 15, r"adapter='abc' is not a number"),
    ("biased weight=0.2 weight=0.3", 18, "key 'weight' given twice \\(first at character 7\\)"),
    ("biased adapter=0 weight=1.5", 17, r"weight=1.5 must be in \(0, 1\)"),
    ("biased adapter=90", 7, r"adapter=90.0 must be in \[-90, 90\)"),
    ("biased width=50", 7, r"width=50.0 must be 0 \(a point mass\) or in \[0.01, 45\)"),
    ("biased weight=nan", 14, "weight='nan' is not a number"),
])
def test_malformed_text_names_position_and_rule(text, position, rule):
    with pytest.raises(ValueError, match=f"^character {position}: {rule}"):
        ori.parse(text)


@settings(max_examples=50, deadline=None)
@given(distributions, st.integers(8, 400))
def test_density_is_a_distribution_with_the_adapter_mass(dist, k):
    s = ori.grid(k)
    p = ori.density(dist, s)
    assert p.shape == (k,) and (p >= 0).all() and np.isclose(p.sum(), 1.0)
    if dist.kind == "uniform":
        assert np.allclose(p, 1.0 / k)
    elif dist.width == 0:  # the point mass sits on the grid point nearest to the adapter
        nearest = np.argmin(np.abs(ori.circular_distance(s, dist.adapter)))
        assert np.isclose(p[nearest], dist.weight + (1 - dist.weight) / k)


def test_sampler_matches_density_and_metadata():
    dist = ori.biased(adapter=30.0, weight=0.4, width=8.0)
    stimuli = ori.sample(dist, 40000, seed=3)
    theta = np.array([x.orientation for x in stimuli])
    assert ((theta >= -90) & (theta < 90)).all()
    assert stimuli == ori.sample(dist, 40000, seed=3)  # same seed, same stimuli
    assert abs(np.mean([x.from_adapter for x in stimuli]) - 0.4) < 0.01
    # metadata: signed distance to the adapter, wrapped into [-90, 90)
    assert all(np.isclose(x.distance, ori.wrap(x.orientation - 30.0)) for x in stimuli[:200])
    # histogram on a 36-bin grid against the exact density (bins centred on grid points)
    k = 36
    s = ori.grid(k)
    bins = np.round(ori.wrap(theta - s[0]) / (180 / k)).astype(int) % k  # nearest grid point
    freq = np.bincount(bins, minlength=k) / len(theta)
    fine = ori.density(dist, ori.grid(k * 50))  # bin mass: the density summed on a 50x finer grid
    exact = np.array([fine[(np.arange(50) - 25 + 50 * j) % (k * 50)].sum() for j in range(k)])
    assert np.abs(freq - exact).max() < 0.01


def test_point_mass_sampler_and_uniform_metadata():
    stimuli = ori.sample(ori.biased(-45.0, 0.5, 0.0), 2000, seed=0)
    at = [x for x in stimuli if x.from_adapter]
    assert all(x.orientation == -45.0 and x.distance == 0.0 for x in at)
    assert 900 < len(at) < 1100
    uniform = ori.sample(ori.UNIFORM, 100, seed=0)
    assert not any(x.from_adapter for x in uniform) and all(x.distance == 0.0 for x in uniform)


def test_wrap_and_distance_are_180_periodic():
    assert ori.wrap(90.0) == -90.0 and ori.wrap(-91.0) == 89.0 and ori.wrap(270.0) == -90.0
    assert ori.circular_distance(80.0, -80.0) == -20.0
    with pytest.raises(ValueError, match="at least 2"):
        ori.grid(1)
