import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.tasks import addition as add

configs = st.builds(add.AdditionConfig, max_digits=st.integers(1, 6), min_numbers=st.integers(1, 3),
                    max_numbers=st.integers(3, 8))


def column_sum(a: str, b: str) -> str:
    """Independent schoolbook addition on digit strings."""
    a, b = a[::-1], b[::-1]
    out, carry = [], 0
    for i in range(max(len(a), len(b))):
        d = (int(a[i]) if i < len(a) else 0) + (int(b[i]) if i < len(b) else 0) + carry
        out.append(str(d % 10))
        carry = d // 10
    if carry:
        out.append(str(carry))
    return "".join(reversed(out)).lstrip("0") or "0"


@settings(max_examples=60, deadline=None)
@given(configs, st.integers(0, 2**32 - 1))
def test_samples_sums_round_trip_and_encoding(config, seed):
    problems = add.sample(config, 6, seed)
    for p in problems:
        assert config.min_numbers <= len(p.numbers) <= config.max_numbers
        assert all(1 <= d <= config.max_digits for d in p.digits)
        assert p.digits == tuple(len(str(x)) for x in p.numbers)
        total = "0"
        for x, s in zip(p.numbers, p.sums):
            total = column_sum(total, str(x))
            assert str(s) == total
        assert add.parse(add.format_problem(p), config) == p
    arr = add.encode(problems, config)
    B, T = len(problems), max(len(p.numbers) for p in problems)
    assert arr["inputs"].shape == (B, T, 10 * config.max_digits)
    assert arr["targets"].shape == (B, T, config.out_digits)
    for i, p in enumerate(problems):
        assert arr["mask"][i].sum() == len(p.numbers)
        for t, s in enumerate(p.sums):
            assert add.decode_sum(arr["targets"][i, t]) == s
            # one-hot groups: one per digit of the number, zero beyond it
            groups = arr["inputs"][i, t].reshape(config.max_digits, 10)
            assert groups.sum(1).tolist() == [1.0] * p.digits[t] + [0.0] * (config.max_digits - p.digits[t])


def test_by_hand():
    p = add.parse("512 + 7 + 86")
    assert p.sums == (512, 519, 605) and p.digits == (3, 1, 2)
    assert add.digits_of(605, 4) == [5, 0, 6, add.BLANK]
    assert add.decode_sum([5, 0, 6, add.BLANK]) == 605
    assert add.decode_sum([0, add.BLANK, add.BLANK]) == 0
    assert add.decode_sum([5, add.BLANK, 6]) is None  # digit after a blank
    assert add.decode_sum([5, 0, add.BLANK]) is None  # leading zero
    assert add.AdditionConfig(max_digits=3, max_numbers=5).out_digits == 4


def test_every_digit_count_occurs():
    c = add.AdditionConfig(max_digits=3, max_numbers=5)
    ps = add.sample(c, 500, 0)
    assert {d for p in ps for d in p.digits} == {1, 2, 3}
    assert {len(p.numbers) for p in ps} == set(range(1, 6))
    assert add.sample(c, 5, 1) == add.sample(c, 5, 1) != add.sample(c, 5, 2)


@pytest.mark.parametrize("text, message", [
    ("12a + 3", "character 2: 'a' is not a digit"),
    ("12 + -3", "character 5: '-' is not a digit"),
    ("12 + 3.5", "character 6: '.' is not a digit"),
    ("12 +  + 3", "character 6: missing number"),
    ("", "character 0: missing number"),
    ("12 + 007", "character 5: '007' has a leading zero"),
    ("1234 + 5", "character 0: '1234' has 4 digits; at most 3 allowed"),
    ("1 + 2 + 3 + 4 + 5 + 6", "character 20: more than 5 numbers"),
])
def test_malformed_text_names_position_and_rule(text, message):
    with pytest.raises(ValueError, match="character \\d+") as err:
        add.parse(text, add.AdditionConfig(max_digits=3, max_numbers=5))
    assert message in str(err.value)


def test_bad_numbers_and_configs():
    c = add.AdditionConfig(max_digits=2, max_numbers=3)
    with pytest.raises(ValueError, match="number 1 is 100; allowed 0..99"):
        add.encode([add.make_problem([5, 100])], c)
    with pytest.raises(ValueError, match="4 numbers; allowed 1..3"):
        add.make_problem([1, 2, 3, 4], c)
    with pytest.raises(ValueError, match="max_digits=0 is out of range"):
        add.AdditionConfig(max_digits=0)
    with pytest.raises(ValueError, match="min_numbers <= max_numbers"):
        add.AdditionConfig(min_numbers=4, max_numbers=2)
    assert np.array_equal(add.encode([add.make_problem([7])], c)["digits"], [[1]])
