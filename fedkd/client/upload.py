"""The trained student's logits made ready to leave the node: the client's upload chain.

The chain itself (attack -> clip -> noise -> encode, and its inverse on the server) is
:mod:`fedkd.uploads`; this module builds the node's chain from a finished job.
"""

from __future__ import annotations

import numpy as np

from fedkd.client.train_job import TrainJob
from fedkd.uploads import (
    Corrupt,
    UploadChain,
    Uploader,
    client_chain,
    privacy_stages,
    upload_encoding,
)


def upload_chain(job: TrainJob) -> UploadChain:
    """The node's chain for ``job``: its attack (malicious only), client_dp, the encoding.

    DP parameters are the job's (the instruction's, raised to the node's own local-DP
    floor); the encoding is ``compression.soft_labels`` when ``uplink``, else fp32.
    """
    cfg = job.cfg
    attack = Corrupt(cfg.attack.kind, cfg.attack.scale) if job.malicious else None
    privacy = (
        privacy_stages(
            job.dp_clip, job.dp_noise, local=job.dp_local, reproducible=job.dp_reproducible
        )
        if job.dp_mode == "client_dp"
        else ()
    )
    comp = cfg.compression
    encoding = upload_encoding(comp.soft_labels, comp.uplink, job.temperature, comp.topk)
    return client_chain(attack=attack, privacy=privacy, encoding=encoding)


def upload_arrays(job: TrainJob, logits: np.ndarray) -> dict[str, np.ndarray]:
    """The arrays of the reply: ``logits`` after every stage of :func:`upload_chain`.

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
    return upload_chain(job).apply(logits, Uploader(job.cfg.seed, job.pid, job.rnd))
