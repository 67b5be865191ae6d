import pytest

from mtransfer.strategies import STRATEGIES, plan_strategy

GROUPS = ["embeddings", "layer.0", "layer.1", "layer.2", "head"]


def trainable_by_epoch(plan):
    return [sorted(plan.trainable_names(e)) for e in range(plan.num_epochs)]


def test_frozen_trains_only_the_head_at_the_head_rate():
    plan = plan_strategy("frozen", GROUPS, num_epochs=2, learning_rate=1e-3, head_learning_rate=2e-2)
    assert trainable_by_epoch(plan) == [["head"], ["head"]]
    assert plan.phases[0].peak_lrs == (0.0, 0.0, 0.0, 0.0, 2e-2)
    # no head rate: the default head rate, not the backbone's (the trainer passes the one it chose on the cache)
    assert plan_strategy("frozen", GROUPS, num_epochs=1, learning_rate=2e-5).phases[0].peak_lrs[-1] == 5e-3


def test_full_trains_everything_at_one_rate():
    plan = plan_strategy("full", GROUPS, num_epochs=1, learning_rate=2e-5)
    assert trainable_by_epoch(plan) == [sorted(GROUPS)]
    assert set(plan.phases[0].peak_lrs) == {2e-5}


def test_last_n_trains_the_top_groups_and_head():
    plan = plan_strategy("last_n", GROUPS, num_epochs=2, learning_rate=1e-4, last_n=2)
    assert trainable_by_epoch(plan)[0] == ["head", "layer.1", "layer.2"]


def test_last_n_out_of_range_names_the_groups():
    with pytest.raises(ValueError, match=r"last_n=5 does not fit this model: it has 4 adapter layer groups"):
        plan_strategy("last_n", GROUPS, num_epochs=2, learning_rate=1e-4, last_n=5)
    with pytest.raises(ValueError, match="needs last_n"):
        plan_strategy("last_n", GROUPS, num_epochs=2, learning_rate=1e-4)


def test_two_stage_head_then_unfreeze_with_lower_rate():
    plan = plan_strategy("two_stage", GROUPS, num_epochs=4, learning_rate=1e-5, head_learning_rate=1e-3, head_epochs=1)
    assert trainable_by_epoch(plan) == [["head"]] + [sorted(GROUPS)] * 3
    assert plan.phase_at(0).peak_lrs[-1] == 1e-3
    assert plan.phase_at(1).peak_lrs == (1e-5,) * 5
    # the schedule restarts for the second stage
    assert plan.phase_at(0).segment != plan.phase_at(1).segment
    assert plan.segment_bounds(plan.phase_at(1).segment) == (1, 3)


def test_two_stage_default_head_rate_is_its_own_and_last_n_limits_unfreezing():
    """The head-only rate used to be 10 x learning_rate (3e-4 for the README's 3e-5: a head that barely moved)."""
    plan = plan_strategy("two_stage", GROUPS, num_epochs=3, learning_rate=1e-5, last_n=1, head_epochs=2)
    assert plan.phase_at(0).peak_lrs[-1] == pytest.approx(5e-3)
    other = plan_strategy("two_stage", GROUPS, num_epochs=3, learning_rate=1e-3, last_n=1, head_epochs=2)
    assert other.phase_at(0).peak_lrs[-1] == pytest.approx(5e-3)  # whatever the backbone's rate
    assert trainable_by_epoch(plan) == [["head"], ["head"], ["head", "layer.2"]]


def test_two_stage_needs_both_stages():
    with pytest.raises(ValueError, match="head_epochs=2, num_epochs=2"):
        plan_strategy("two_stage", GROUPS, num_epochs=2, learning_rate=1e-5, head_epochs=2)


def test_discriminative_rates_divide_by_decay_per_group_down_from_the_head():
    plan = plan_strategy("full", GROUPS, num_epochs=1, learning_rate=1.0, discriminative_lr_decay=2.6)
    assert plan.phases[0].peak_lrs == pytest.approx((1 / 2.6**4, 1 / 2.6**3, 1 / 2.6**2, 1 / 2.6, 1.0))


def test_gradual_unfreezing_adds_one_group_from_the_top_each_epoch():
    plan = plan_strategy("gradual_unfreezing", GROUPS, num_epochs=6, learning_rate=1e-4)
    assert trainable_by_epoch(plan) == [
        ["head"],
        ["head", "layer.2"],
        ["head", "layer.1", "layer.2"],
        ["head", "layer.0", "layer.1", "layer.2"],
        sorted(GROUPS),
        sorted(GROUPS),
    ]
    # one schedule over the whole run
    assert {p.segment for p in plan.phases} == {0}


def test_gradual_unfreezing_every_two_epochs_and_short_runs():
    plan = plan_strategy("gradual_unfreezing", GROUPS, num_epochs=5, learning_rate=1e-4, unfreeze_every=2)
    assert trainable_by_epoch(plan) == [["head"], ["head"], ["head", "layer.2"], ["head", "layer.2"],
                                        ["head", "layer.1", "layer.2"]]


def test_chain_thaw_head_then_each_group_alone_then_all():
    plan = plan_strategy("chain_thaw", GROUPS, num_epochs=7, learning_rate=1e-4, head_learning_rate=1e-3)
    assert trainable_by_epoch(plan) == [["head"], ["embeddings"], ["layer.0"], ["layer.1"], ["layer.2"],
                                        sorted(GROUPS), sorted(GROUPS)]
    assert plan.phase_at(0).peak_lrs[-1] == 1e-3
    assert plan.phase_at(2).peak_lrs == (0.0, 1e-4, 0.0, 0.0, 0.0)
    assert len({p.segment for p in plan.phases}) == len(plan.phases)


def test_chain_thaw_too_few_epochs_says_how_many():
    with pytest.raises(ValueError, match=r"needs num_epochs >= 6"):
        plan_strategy("chain_thaw", GROUPS, num_epochs=5, learning_rate=1e-4)


def test_unknown_strategy():
    with pytest.raises(ValueError, match="Unknown strategy 'freeze'; expected one of frozen"):
        plan_strategy("freeze", GROUPS, num_epochs=1, learning_rate=1e-4)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_plan_covers_every_epoch_and_describes_itself(strategy):
    plan = plan_strategy(strategy, GROUPS, num_epochs=8, learning_rate=1e-4, last_n=2)
    covered = [e for p in plan.phases for e in range(p.start_epoch, p.end_epoch)]
    assert covered == list(range(8))
    rows = plan.describe()
    assert rows[0]["epochs"][0] == 0 and rows[-1]["epochs"][1] == 8
    for row in rows:
        assert set(row["peak_lr"]) == set(row["trainable"])
