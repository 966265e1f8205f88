"""The catalogue method's client-side term of a train job (see :mod:`fedkd.losses`)."""

from __future__ import annotations

from flwr.app import Context

from fedkd import seeds
from fedkd.client.node_state import fresh_student, load_aux
from fedkd.client.train_job import TrainJob
from fedkd.losses import ExtraTerm, TermContext, method_of
from fedkd.training import make_optimizer


def extra_term(context: Context, job: TrainJob) -> ExtraTerm | None:
    """The catalogue method's client-side term for this job (None: the logit loss only).

    A method may replace ``job.model`` / ``job.opt`` (born_again starts a fresh student
    when the round starts a new generation for this client). The term's device-side
    modules come from the node's aux state; the caller saves ``term.state()`` after
    training.
    """
    cfg = job.cfg
    method = method_of(cfg.distill.loss)
    if method is None or not method.has_client_term:
        return None
    ctx = TermContext(
        beta=cfg.distill.beta_or(method.default_beta),
        params=method.resolve(cfg.distill.params),
        distill=cfg.distill,
        rounds=cfg.rounds,
        server_round=job.rnd,
        model=job.model,
        opt=job.opt,
        lr=job.lr,
        x_proxy=job.public.x_proxy[job.proxy_idx],
        x_local=job.x_local,
        knowledge=job.knowledge,
        aux=load_aux(context),
        init_seed=seeds.node_seed(cfg.seed, "node.hint_init", job.pid, 0),
        fresh_student=lambda generation: fresh_student(
            cfg, job.public, job.pid, generation=generation
        ),
        new_optimizer=lambda params: make_optimizer(cfg.distill.optimizer, params, job.lr),
    )
    term = method.client_term(ctx)
    job.model, job.opt = ctx.model, ctx.opt
    return term
