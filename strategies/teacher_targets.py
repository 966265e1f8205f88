"""The server teachers' soft targets a teacher-based strategy sends (or PATE's release)."""

from __future__ import annotations

import numpy as np

from fedkd.config import FedkdConfig
from fedkd.errors import ConfigError
from fedkd.teachers import TeacherBundle


def teacher_targets(cfg: FedkdConfig, teachers: TeacherBundle, rule: str) -> np.ndarray:
    """The teachers' proxy logits fused with ``rule``; a config error without teachers.

    Under ``privacy.mode = "pate"`` the targets are the run's one private release.
    """
    if teachers.count == 0:
        raise ConfigError(f"strategy.name={cfg.strategy.name!r} needs teachers.count >= 1")
    if cfg.privacy.mode == "pate":
        if teachers.pate_targets is not None:  # the run's one release (see run_server)
            return teachers.pate_targets
        from fedkd.privacy.pate import pate_targets

        return pate_targets(cfg, teachers.proxy_logits)
    return teachers.fused(teachers.proxy_logits, rule, cfg.distill.temperature, **cfg.fusion_params)
