import math

import pytest

from mtransfer.schedules import constant, cosine, get_schedule, linear, slanted_triangular


def test_slanted_triangular_matches_ulmfit_formula():
    T, cut_frac, ratio = 200, 0.1, 32
    cut = math.floor(T * cut_frac)
    for t in (0, 5, 19, 20, 21, 100, 199):
        p = t / cut if t < cut else 1 - (t - cut) / (cut * (1 / cut_frac - 1))
        assert slanted_triangular(t, T, cut_frac=cut_frac, ratio=ratio) == pytest.approx((1 + p * (ratio - 1)) / ratio)
    assert slanted_triangular(cut, T) == 1.0
    assert slanted_triangular(0, T) == pytest.approx(1 / 32)


def test_linear_warmup_then_decay():
    assert [round(linear(s, 10, warmup_steps=2), 3) for s in range(10)] == [0.5, 1.0, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125]


def test_cosine_warmup_then_half_cosine():
    assert cosine(0, 10, warmup_steps=2) == 0.5
    assert cosine(2, 10, warmup_steps=2) == 1.0
    assert cosine(6, 10, warmup_steps=2) == pytest.approx(0.5)
    assert cosine(10, 10, warmup_steps=2) == pytest.approx(0.0)


def test_constant_with_warmup():
    assert [constant(s, 5, warmup_steps=2) for s in range(4)] == [0.5, 1.0, 1.0, 1.0]


def test_get_schedule_uses_warmup_ratio_and_rejects_unknown_names():
    f = get_schedule("linear", warmup_ratio=0.2, total_steps=10)
    assert f(0, 10) == 0.5 and f(1, 10) == 1.0
    with pytest.raises(ValueError, match="Unknown lr_schedule 'onecycle'"):
        get_schedule("onecycle")
