"""Named random streams (fedkd.seeds): one tag per stream, reproducible, independent."""

import numpy as np
import pytest
import torch

from fedkd import seeds


def test_no_two_streams_share_a_tag():
    by_tag: dict[int, list[str]] = {}
    for name, tag in seeds.STREAMS.items():
        by_tag.setdefault(tag, []).append(name)
    shared = {tag: names for tag, names in by_tag.items() if len(names) > 1}
    assert not shared, f"streams sharing a tag: {shared}"


def test_tags_are_positive_integers_and_names_are_dotted():
    for name, tag in seeds.STREAMS.items():
        assert type(tag) is int and tag > 0, name
        assert "." in name and name == name.lower(), name


def test_a_stream_is_seed_tag_then_parts():
    # the layout every recorded run depends on: [seed, tag, *parts]
    assert seeds.entropy(7, "devices.available", 3, 2) == [7, 21, 3, 2]
    a = seeds.rng(7, "devices.available", 3, 2).random(4)
    assert np.array_equal(a, np.random.default_rng([7, 21, 3, 2]).random(4))
    legacy = int(np.random.SeedSequence([7, 7, 1]).generate_state(1)[0])
    assert seeds.int_seed(7, "teachers.init", 1) == legacy


def test_streams_are_reproducible():
    a = seeds.rng(3, "views.noise").standard_normal(5)
    b = seeds.rng(3, "views.noise").standard_normal(5)
    assert np.array_equal(a, b)
    t1 = torch.rand(3, generator=seeds.torch_generator(3, "teachers.init", 2))
    t2 = torch.rand(3, generator=seeds.torch_generator(3, "teachers.init", 2))
    assert torch.equal(t1, t2)


def test_streams_seeds_and_parts_draw_different_numbers():
    draws = {name: tuple(seeds.rng(0, name).random(3)) for name in seeds.STREAMS} | {
        "seed 1": tuple(seeds.rng(1, "views.noise").random(3)),
        "part 1": tuple(seeds.rng(0, "views.noise", 1).random(3)),
    }
    assert len(set(draws.values())) == len(draws)
    ints = {seeds.int_seed(0, name) for name in seeds.STREAMS}
    assert len(ints) == len(seeds.STREAMS)


def test_views_and_pate_no_longer_share_a_stream():
    # they both drew from [seed, 31] before: PATE's query rows followed the view noise
    assert seeds.tag("views.noise") != seeds.tag("pate.query_rows")
    assert seeds.tag("views.outside_noise") != seeds.tag("pate.query_rows")


def test_trailing_zero_parts_are_the_same_stream():
    # why a stream keeps its number of parts: SeedSequence drops trailing zeros
    a = seeds.rng(0, "strategy.train_sample").random(2)
    b = seeds.rng(0, "strategy.train_sample", 0).random(2)
    assert np.array_equal(a, b)


def test_unknown_stream_names_the_known_ones():
    with pytest.raises(KeyError, match="unknown random stream 'nope'; known: data.split"):
        seeds.rng(0, "nope")
