"""The trained student's logits made ready to leave the node: attack, clip, noise, encode."""

from __future__ import annotations

import numpy as np

from fedkd.attacks import corrupt_logits
from fedkd.client.train_job import TrainJob
from fedkd.compression import encode
from fedkd.privacy.client_dp import clip_upload, local_noise
from fedkd.privacy.noise import TAG_LOCAL, noise_source


def upload_arrays(job: TrainJob, logits: np.ndarray) -> dict[str, np.ndarray]:
    """The arrays of the reply: ``logits`` after every step an upload passes through.

    A malicious client corrupts them (``attack``), client_dp clips each row and, when
    local, adds the node's own noise; the result is encoded as ``compression`` says.

    Parameters
    ----------
    job : TrainJob
        The finished job (its client id, round, DP parameters and config).
    logits : np.ndarray
        The student's fp32 logits on the reply rows, ``(len(job.reply_idx), C)``.

    Returns
    -------
    dict
        Named arrays to send (see :func:`fedkd.compression.encode`).

    """
    if job.malicious:
        cfg = job.cfg
        rng = np.random.default_rng([cfg.seed, 12, job.pid, job.rnd])
        logits = corrupt_logits(logits, cfg.attack.kind, cfg.attack.scale, rng)
    if job.dp_mode == "client_dp" and len(logits):  # clip (and noise) before it leaves
        logits = clip_upload(logits, job.dp_clip)
        if job.dp_local:
            source = noise_source(job.dp_reproducible, job.cfg.seed, TAG_LOCAL, job.pid, job.rnd)
            logits = local_noise(logits, job.dp_clip, job.dp_noise, source)
    return encoded(job, logits)


def encoded(job: TrainJob, logits: np.ndarray) -> dict[str, np.ndarray]:
    """The reply's logits, encoded as ``compression`` says (plain fp32 when not uplink)."""
    comp = job.cfg.compression
    kind = comp.soft_labels if comp.uplink else "fp32"
    return encode(logits, kind, temperature=job.temperature, k=comp.topk)
