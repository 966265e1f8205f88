"""Sizing of the Ray engine's per-tier actor pools (no Ray needed: actors are stubbed)."""

import pytest

from fedkd.engines.ray_engine import RayGrid
from fedkd.errors import ConfigError
from fedkd.validation import load_config

from ..conftest import TINY

TIERS = (
    "devices.tiers=[{name='mcu', preset='microcontroller', share=0.5, cpus=1.0, memory_mb=256},"
    " {name='phone', preset='low_end_phone', share=0.5, cpus=1.0, memory_mb=512}]"
)


def _grid(overrides):
    grid = RayGrid.__new__(RayGrid)  # sizing only: no Ray instance
    grid._cfg = load_config(TINY, overrides)
    grid._new_actor = lambda pool: object()
    return grid


def test_automatic_pools_fit_the_cluster_or_shrink_their_reservations(caplog):
    pools = _grid([TIERS])._make_pools(total_cpus=4, total_memory=8 * 2**30)
    assert [(p.name, len(p.actors), p.cpus) for p in pools] == [("mcu", 2, 1.0), ("phone", 2, 1.0)]
    assert [p.memory for p in pools] == [256 * 2**20, 512 * 2**20]
    small = _grid([TIERS])._make_pools(total_cpus=4, total_memory=768 * 2**20)
    # 2 x 256 MB + 2 x 512 MB = 1536 MB asked, 768 MB there: every reservation halves
    assert [p.memory for p in small] == [128 * 2**20, 256 * 2**20]
    assert "each actor reserves 50%" in caplog.text


def test_explicit_actors_beyond_the_cluster_are_a_config_error():
    tiers = TIERS.replace("cpus=1.0, memory_mb=256", "cpus=1.0, memory_mb=256, actors=4")
    with pytest.raises(ConfigError, match=r"ask for 6 CPUs .* the Ray cluster has 4"):
        _grid([tiers])._make_pools(total_cpus=4, total_memory=8 * 2**30)
