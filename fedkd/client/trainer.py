"""One train job trained on its node: distillation (with its extra term) or DP-SGD."""

from __future__ import annotations

from flwr.app import Context, Message

from fedkd.client.extra_terms import extra_term
from fedkd.client.node_state import save_aux
from fedkd.client.train_job import TrainJob, prepare_train
from fedkd.client.train_reply import finish_train, reply_logits_and_accuracy
from fedkd.losses import resolve_loss
from fedkd.privacy.noise import TAG_DP_SGD, noise_source
from fedkd.training import fit_distill


def train(msg: Message, context: Context) -> Message:
    """Distil the node's student on the received soft targets plus private cross-entropy.

    Returns
    -------
    Message
        The reply: the student's logits on the reply rows, train losses, test accuracy.

    """
    return run_job(msg, context, prepare_train(msg, context))


def run_job(msg: Message, context: Context, job: TrainJob) -> Message:
    """Train a prepared job, save the node's state and build the reply."""
    extra = extra_term(context, job)  # may start a new born-again generation in job
    args = (job.model, job.opt, job.x_local, job.y_local, job.public.x_proxy[job.proxy_idx])
    common = {
        "epochs": job.epochs,
        "batch_size": job.cfg.distill.batch_size,
        "temperature": job.temperature,
        "alpha": job.alpha,
        "gen": job.gen,
        "loss": resolve_loss(job.cfg.distill.loss, job.cfg.distill.params),
    }
    if job.dp_mode == "dp_sgd":
        from fedkd.privacy.dp_sgd import fit_distill_dp

        source = noise_source(job.dp_reproducible, job.cfg.seed, TAG_DP_SGD, job.pid, job.rnd)
        stats, _ = fit_distill_dp(
            *args,
            job.soft,
            noise_multiplier=job.dp_noise,
            clip=job.dp_clip,
            source=source,
            **common,
        )
    else:
        stats = fit_distill(*args, job.soft, extra=extra, **common)
    if extra is not None:
        save_aux(context, extra.state())
    return finish_train(msg, context, job, stats, *reply_logits_and_accuracy(job))
