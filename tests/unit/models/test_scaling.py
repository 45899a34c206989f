import math

import pytest

import effnet
from effnet.models.scaling import PUBLISHED, compound_scale, dropout_for_phi, flops_ratio, round_channels, round_repeats


def test_compound_scale_follows_the_paper_rule():
    s = compound_scale(2)
    assert s.depth == pytest.approx(1.2**2)
    assert s.width == pytest.approx(1.1**2)
    assert s.resolution_multiplier == pytest.approx(1.15**2)
    assert s.resolution == round(224 * 1.15**2)


def test_paper_coefficients_double_flops_per_phi():
    assert flops_ratio(1.2, 1.1, 1.15) == pytest.approx(1.92, abs=0.01)


def test_phi_zero_is_the_baseline():
    s = compound_scale(0)
    assert (s.width, s.depth, s.resolution) == (1.0, 1.0, 224)


def test_custom_coefficients_and_base_resolution():
    s = compound_scale(1.5, alpha=1.1, beta=1.2, gamma=1.3, base_resolution=32)
    assert s.depth == pytest.approx(1.1**1.5)
    assert s.width == pytest.approx(1.2**1.5)
    assert s.resolution == round(32 * 1.3**1.5)


def test_published_b7_does_not_follow_the_formula():
    # The reason names use the table and phi= uses the formula.
    assert compound_scale(7).depth == pytest.approx(3.58, abs=0.01)
    assert PUBLISHED["efficientnet_b7"].depth == 3.1


def test_published_dropout_matches_phi_rule():
    for phi in range(8):
        assert dropout_for_phi(phi) == PUBLISHED[f"efficientnet_b{phi}"].dropout


@pytest.mark.parametrize("phi", [math.nan, math.inf, -math.inf, 100, -50, "abc"])
def test_bad_phi_is_a_usage_error(phi):
    with pytest.raises(effnet.UsageError, match="phi"):
        compound_scale(phi)


@pytest.mark.parametrize("name", ["alpha", "beta", "gamma"])
def test_coefficients_below_one_are_rejected(name):
    with pytest.raises(effnet.UsageError, match=name):
        compound_scale(1, **{name: 0.9})


@pytest.mark.parametrize(
    "channels,width,expected",
    [
        (32, 1.0, 32),
        (32, 1.1, 32),  # 35.2 -> 32 (>= 90% of 35.2)
        (40, 1.1, 48),  # 44 rounds half up to 48
        (1280, 1.4, 1792),
        (16, 0.1, 8),  # never below the divisor
        (24, 0.3, 8),  # 7.2 -> 8
        (112, 0.7, 80),  # 78.4 -> 80
        (36, 1.0, 40),  # nearest is 40
        (44, 1.0, 48),  # halfway rounds up
    ],
)
def test_round_channels_matches_reference_rule(channels, width, expected):
    assert round_channels(channels, width) == expected


def test_round_channels_never_below_90_percent():
    for c in range(8, 400):
        for w in (0.5, 0.75, 1.0, 1.1, 1.3, 1.7, 2.2, 4.3):
            r = round_channels(c, w)
            assert r % 8 == 0 and r >= 0.9 * c * w


def test_round_repeats_ceils():
    assert round_repeats(3, 1.1) == 4
    assert round_repeats(4, 3.1) == 13
    assert round_repeats(1, 0.3) == 1
