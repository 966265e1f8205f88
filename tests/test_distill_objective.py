"""The step objective alpha * [distill + beta * term] + (1 - alpha) * CE, shared by trainers."""

import torch

from fedkd.distill_objective import step_objective


def test_every_part_and_its_weight():
    kd, ce, term = torch.tensor(2.0), torch.tensor(3.0), torch.tensor(5.0)
    got = step_objective(torch.zeros(()), kd, ce, 0.25, term, beta=4.0)
    assert got.item() == 0.25 * 2.0 + 0.75 * 3.0 + 0.25 * 4.0 * 5.0


def test_absent_parts_are_skipped_and_floats_work_too():
    assert step_objective(0.0, None, 3.0, 0.5) == 1.5
    assert step_objective(0.0, 2.0, None, 0.5) == 1.0
    assert step_objective(0.0, None, None, 0.5, None, 9.0) == 0.0


def test_vectors_are_per_client_and_keep_the_float_order():
    kd, ce = torch.rand(4), torch.rand(4)
    got = step_objective(torch.zeros(4), kd, ce, 0.7)
    assert torch.equal(got, torch.zeros(4) + 0.7 * kd + (1.0 - 0.7) * ce)
