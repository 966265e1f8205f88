"""Named random streams: every seeded draw of a run comes from one stream of :data:`STREAMS`.

A stream is the entropy ``[seed, tag, *parts]`` of a :class:`numpy.random.SeedSequence`:
the run seed, the stream's tag, then what tells its draws apart (a client, a round, a
teacher). One table holds every tag so that no two uses share one (``tests/test_seeds.py``
fails when they do): two uses with one tag would draw the same numbers.

``SeedSequence`` ignores trailing zeros (``[s, t]`` and ``[s, t, 0]`` are one stream), so a
stream keeps the same number of parts at every call.

The noise of private mechanisms never comes from here: it comes from the OS's
cryptographic source (:mod:`fedkd.privacy.noise`); its ``noise.*`` tags only name the
seeded debugging source (``privacy.reproducible_noise``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

STREAMS: dict[str, int] = {
    "data.split": 1,  # fedkd.data: the permutation that cuts the dataset into its splits
    "data.min_size": 2,  # fedkd.data: samples moved to clients below partition.min_size
    "strategy.train_sample": 3,  # strategies: clients sampled to train, per round
    "strategy.evaluate_sample": 4,  # strategies: clients sampled to evaluate, per round
    "strategy.proxy_subset": 5,  # strategies: proxy rows of a round (proxy_fraction < 1)
    "teachers.init": 7,  # fedkd.teachers: each teacher's seed (init, bootstrap, batches)
    "teachers.shards": 8,  # fedkd.teachers: disjoint shards of the teacher split
    "attack.malicious": 11,  # fedkd.attacks: which clients are malicious
    "attack.client": 12,  # client: a malicious client's draws, per client and round
    "devices.tiers": 20,  # the tier of every client (fedkd.config.devices.assign_tiers)
    "devices.available": 21,  # fedkd.devices: is a client online, per client and round
    "devices.fails": 22,  # fedkd.devices: does a client crash, per client and round
    "views.noise": 31,  # fedkd.views: the fixed noise of a 'noise:S' view, per sample
    "views.outside_noise": 32,  # fedkd.views: 'noise:S' on a device's own samples
    "pate.query_rows": 33,  # fedkd.privacy.pate: which proxy rows the teachers label
    "data.owners": 34,  # fedkd.data: which clients hold data when the pool is too small
    "data.proxy_rows": 37,  # fedkd.data.proxy: rows drawn from a separate proxy dataset
    "rkd.projection": 43,  # fedkd.losses.rkd: the random projection of the features
    "membership.test": 51,  # fedkd.privacy.membership: test rows of the attack
    "membership.pairs": 52,  # fedkd.privacy.membership: member / non-member draws
    "noise.client_sampling": 9003,  # seeded debugging source: Poisson client sampling
    "noise.gnmax": 9032,  # seeded debugging source: PATE's vote noise
    "noise.central": 9041,  # seeded debugging source: central client_dp noise
    "noise.local": 9042,  # seeded debugging source: local client_dp noise
    "noise.dp_sgd": 9050,  # seeded debugging source: DP-SGD noise
}
"""Stream name -> tag. A new stream takes a tag no other stream has."""


def tag(stream: str) -> int:
    """The tag of ``stream`` (``KeyError`` naming the known streams otherwise)."""
    try:
        return STREAMS[stream]
    except KeyError:
        raise KeyError(f"unknown random stream {stream!r}; known: {', '.join(STREAMS)}") from None


def entropy(seed: int, stream: str, *parts: int) -> list[int]:
    """``[seed, tag, *parts]``: the ``SeedSequence`` entropy of a stream's draw."""
    return [int(seed), tag(stream), *(int(p) for p in parts)]


def rng(seed: int, stream: str, *parts: int) -> np.random.Generator:
    """A numpy ``Generator`` on ``stream`` for the run ``seed`` and ``parts``.

    Parameters
    ----------
    seed : int
        The run seed (``FedkdConfig.seed``).
    stream : str
        A name in :data:`STREAMS`.
    *parts : int
        What tells this draw apart from the stream's others (client, round, ...).

    """
    return np.random.default_rng(entropy(seed, stream, *parts))


def int_seed(seed: int, stream: str, *parts: int) -> int:
    """One 32-bit integer seed from ``stream`` (e.g. for ``torch.manual_seed``)."""
    sequence = np.random.SeedSequence(entropy(seed, stream, *parts))
    return int(sequence.generate_state(1)[0])


def torch_generator(seed: int, stream: str, *parts: int) -> torch.Generator:
    """A ``torch.Generator`` seeded with :func:`int_seed` of ``stream``."""
    import torch

    return torch.Generator().manual_seed(int_seed(seed, stream, *parts))


NODE_STREAMS: dict[str, int] = {
    "node.batches": 0,  # client: a round's training batches
    "node.local_only": 1,  # client: the local-only baseline's batches
    "node.student_init": 2,  # client: a fresh student's initial weights, per generation
    "node.hint_init": 5,  # fedkd.losses.hint: the client's hint adapter's initial weights
}
"""A client's own streams: entropy ``[seed, partition, index, tag]`` (the tag *last*).

This older layout is kept so that every result measured so far reproduces; it does not
share :data:`STREAMS`' tag space. Its tag-0 stream, having a trailing zero, has the same
entropy as a ``[seed, t, r]`` stream of :data:`STREAMS` when the partition equals ``t``
(client 3's round-``r`` batches and the round-``r`` train sample seed the same way, one
as a torch generator, one as numpy's PCG64); moving the node streams to the
``[seed, tag, ...]`` layout is a results-changing step of its own.
"""


def node_seed(seed: int, stream: str, partition: int, index: int) -> int:
    """A 32-bit seed of a client's own ``stream`` (:data:`NODE_STREAMS`).

    Parameters
    ----------
    seed : int
        The run seed.
    stream : str
        A name in :data:`NODE_STREAMS`.
    partition : int
        The client (partition id).
    index : int
        The round, or the student generation (``node.student_init``), or 0.

    """
    try:
        node_tag = NODE_STREAMS[stream]
    except KeyError:
        known = ", ".join(NODE_STREAMS)
        raise KeyError(f"unknown node stream {stream!r}; known: {known}") from None
    entropy = [int(seed), int(partition), int(index), node_tag]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])
