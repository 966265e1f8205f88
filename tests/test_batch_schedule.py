"""One batch schedule for the sequential, vectorized and DP-SGD trainers."""

import pytest
import torch

from fedkd.batch_schedule import distill_schedule, fit_schedule, shuffled_batches, steps_per_epoch


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_an_epoch_covers_the_longer_side_once_and_cycles_the_shorter():
    schedule = distill_schedule(300, 100, batch_size=64, epochs=2, gen=_gen())
    assert [len(e) for e in schedule] == [steps_per_epoch(300, 100, 64)] * 2 == [5, 5]
    first = torch.cat([pi for pi, _ in schedule[0]])
    assert sorted(first.tolist()) == list(range(300))  # one pass over the proxy rows
    locals_ = [li for _, li in schedule[0]]
    assert all(li is not None and len(li) <= 64 for li in locals_)
    # the private side (100 rows, 2 batches) is reshuffled when it runs out
    assert sorted(torch.cat(locals_[:2]).tolist()) == list(range(100))


def test_the_proxy_permutation_is_drawn_before_the_local_one():
    pi, li = distill_schedule(10, 10, batch_size=10, epochs=1, gen=_gen(3))[0][0]
    gen = _gen(3)
    assert torch.equal(pi, shuffled_batches(10, 10, gen)[-1])
    assert torch.equal(li, shuffled_batches(10, 10, gen)[-1])


@pytest.mark.parametrize(("alpha", "proxy", "local"), [(0.0, False, True), (1.0, True, False)])
def test_fit_schedule_drops_the_side_alpha_switches_off(alpha, proxy, local):
    schedule = fit_schedule(50, 30, alpha=alpha, batch_size=16, epochs=1, gen=_gen())
    assert all((pi is not None) == proxy and (li is not None) == local for pi, li in schedule[0])


def test_dp_sgd_schedule_counts_private_rows_but_draws_only_public_ones():
    plain = distill_schedule(40, 0, batch_size=16, epochs=2, gen=_gen(1))
    dp = distill_schedule(40, 200, batch_size=16, epochs=2, gen=_gen(1), draw_local=False)
    assert [len(e) for e in dp] == [13, 13]  # ceil(200 / 16): the private side sets the length
    assert all(li is None for e in dp for _, li in e)
    # the same proxy batches, in the same order, as far as the plain schedule goes
    flat_plain = [pi for e in plain for pi, _ in e]
    flat_dp = [pi for e in dp for pi, _ in e]
    assert all(torch.equal(a, b) for a, b in zip(flat_plain, flat_dp, strict=False))
