import math

from contrastlab.train.schedule import cosine_lr


def test_cosine_schedule_endpoints_and_formula():
    lr, ratio, epochs = 0.05, 0.001, 200
    assert cosine_lr(0, epochs, lr, ratio) == lr
    for e in (1, 50, 137, 199):
        expected = lr * ratio + (lr - lr * ratio) * (1 + math.cos(math.pi * e / epochs)) / 2
        assert math.isclose(cosine_lr(e, epochs, lr, ratio), expected)
    assert cosine_lr(epochs, epochs, lr, ratio) == lr * ratio


def test_warmup_is_linear_then_cosine():
    assert [cosine_lr(e, 10, 1.0, 0.0, warmup_epochs=4) for e in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert cosine_lr(4, 10, 1.0, 0.0, warmup_epochs=4) == 1.0
    assert cosine_lr(9, 10, 1.0, 0.0, warmup_epochs=4) < 0.1


def test_last_epoch_one_step_short_by_default_and_at_the_minimum_on_request():
    lr, ratio, epochs = 0.1, 0.2**3, 30  # the probe's schedule: 0.1 -> 0.1 * 0.2^3 = 8e-4
    assert math.isclose(cosine_lr(epochs - 1, epochs, lr, ratio), 1.0717e-3, rel_tol=1e-4)
    assert cosine_lr(epochs - 1, epochs, lr, ratio, reach_min_at_last=True) == lr * ratio
    assert cosine_lr(0, epochs, lr, ratio, reach_min_at_last=True) == lr
    for e in (1, 7, 15, 28):
        expected = lr * ratio + (lr - lr * ratio) * (1 + math.cos(math.pi * e / (epochs - 1))) / 2
        assert math.isclose(cosine_lr(e, epochs, lr, ratio, reach_min_at_last=True), expected)
    # after warm-up the cosine counts from the first post-warm-up epoch and still ends at the minimum
    assert cosine_lr(4, 10, 1.0, 0.01, warmup_epochs=4, reach_min_at_last=True) == 1.0
    assert cosine_lr(9, 10, 1.0, 0.01, warmup_epochs=4, reach_min_at_last=True) == 0.01
    assert cosine_lr(0, 1, 1.0, 0.01, reach_min_at_last=True) == 1.0  # one epoch: eta_max
