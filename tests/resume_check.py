"""The kill-and-resume check every trainer's test shares: an interrupted run resumed equals an uninterrupted one."""

import torch


def straight_and_resumed(make, total: int, half: int):
    """(straight, resumed) trainers: make(total, "a") fitted in one go; make(half, "b") fitted, then resumed to total;
    their raw weights are asserted equal. make(steps, name, resume=False) builds a trainer in folder `name`."""
    straight = make(total, "a")
    straight.fit(progress=False)
    make(half, "b").fit(progress=False)
    resumed = make(total, "b", resume=True)
    assert resumed.step == half
    resumed.fit(progress=False)
    for k, v in straight.raw.state_dict().items():
        assert torch.equal(v, resumed.raw.state_dict()[k]), k
    return straight, resumed
