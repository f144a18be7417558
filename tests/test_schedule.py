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
