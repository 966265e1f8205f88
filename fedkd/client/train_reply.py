"""A trained job saved on the node and turned into its reply Message."""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message

from fedkd import keys
from fedkd.client.node_state import save_student
from fedkd.client.replies import reply
from fedkd.client.train_job import TrainJob
from fedkd.client.upload import upload_arrays
from fedkd.training import DistillStats, evaluate, predict_logits


def reply_logits_and_accuracy(job: TrainJob) -> tuple[np.ndarray, float]:
    """The trained student's logits on the reply rows and its test accuracy."""
    logits = (
        predict_logits(job.model, job.public.x_proxy[job.reply_idx]).numpy()
        if len(job.reply_idx)
        else np.zeros((0, job.public.num_classes), np.float32)
    )
    return logits, evaluate(job.model, job.public.x_test, job.public.y_test)


def finish_train(
    msg: Message,
    context: Context,
    job: TrainJob,
    stats: DistillStats,
    logits: np.ndarray,
    acc: float,
) -> Message:
    """Save the student and reply with its uploaded logits, train losses and accuracy.

    Parameters
    ----------
    msg, context : Message, Context
        The train instruction and the node's Context (the student is saved there).
    job : TrainJob
        The trained job.
    stats : DistillStats
        The job's train losses.
    logits, acc : np.ndarray, float
        See :func:`reply_logits_and_accuracy`.

    """
    save_student(context, job.model, job.opt)
    logits = logits.astype(np.float32).reshape(len(job.reply_idx), job.public.num_classes)
    arrays = upload_arrays(job, logits)
    out = reply(
        msg,
        train_metrics(job, stats, acc),
        ArrayRecord({name: Array(np.ascontiguousarray(a)) for name, a in arrays.items()}),
    )
    if job.send_weights:
        out.content[keys.WEIGHTS] = ArrayRecord(job.model.state_dict())
    return out


def train_metrics(
    job: TrainJob, stats: DistillStats, acc: float
) -> dict[str, float | int | list[int]]:
    """The train reply's metrics (with the local DP noise the node applied, if any)."""
    metrics: dict[str, float | int | list[int]] = {
        keys.NUM_EXAMPLES: len(job.y_local),
        keys.PARTITION_ID: job.pid,
        keys.TRAIN_LOSS: stats.loss,
        keys.DISTILL_LOSS: stats.distill_loss,
        keys.CE_LOSS: stats.ce_loss,
        keys.TEST_ACCURACY: acc,
    }
    if job.dp_mode == "client_dp" and job.dp_local:
        metrics[keys.DP_APPLIED_NOISE] = job.dp_noise
    return metrics
