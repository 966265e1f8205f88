"""The catalogue method's client-side term of a train job (see :mod:`fedkd.kd_terms`)."""

from __future__ import annotations

import torch
from flwr.app import Context

from fedkd.client.node_state import fresh_student, load_aux
from fedkd.client.streams import seed_of
from fedkd.client.train_job import TrainJob
from fedkd.kd_terms import AttentionTerm, BornAgainTerm, ExtraTerm, HintTerm, MutualTerm, RKDTerm
from fedkd.knowledge import features_and_logits, method_of
from fedkd.losses.born_again import generation_of
from fedkd.losses.hint import HintAdapter
from fedkd.models import seeded_init
from fedkd.training import make_optimizer, predict_logits


def extra_term(context: Context, job: TrainJob) -> ExtraTerm | None:
    """The catalogue method's client-side term for this job (None: response only).

    ``born_again`` may replace ``job.model`` / ``job.opt`` with a fresh student when the
    round starts a new generation for this client. The term's device-side modules are
    loaded from the node's aux state; the caller saves ``term.state()`` after training.

    Raises
    ------
    ValueError
        When the method needs teacher knowledge and the instruction carries none.

    """
    cfg = job.cfg
    method = method_of(cfg.distill.loss)
    if method is None or method.name in ("response", "takd"):
        return None
    beta = cfg.distill.beta_or(method.default_beta)
    aux = load_aux(context)
    x_proxy = job.public.x_proxy[job.proxy_idx]
    if method.knowledge != "logits":
        if job.knowledge is None:
            if len(job.proxy_idx) == 0:
                return None
            raise ValueError(
                f"distill.loss={method.name!r} needs teacher {method.knowledge} with the "
                "targets; the instruction carries none"
            )
        if method.name == "hint":
            probe = x_proxy[:1] if len(x_proxy) else job.x_local[:1]
            with torch.no_grad():
                channels = features_and_logits(job.model, probe)[0].shape[-1]
            with seeded_init(seed_of(cfg.seed, job.pid, 0, 5)):
                adapter = HintAdapter(channels, job.knowledge.shape[-1], job.knowledge.shape[1])
            opt = make_optimizer(cfg.distill.optimizer, list(adapter.parameters()), job.lr)
            if "adapter" in aux:
                adapter.load_state_dict(aux["adapter"])
                opt.load_state_dict(aux["adapter_opt"])
            return HintTerm(beta, job.knowledge, adapter, opt)
        if method.name == "rkd":
            return RKDTerm(beta, job.knowledge, rows=cfg.distill.relation_batch)
        return AttentionTerm(beta, job.knowledge)
    if method.name == "born_again":
        gen = generation_of(job.rnd, cfg.rounds, cfg.distill.generations)
        if gen > int(aux.get("generation", 1)):  # a new generation: the student becomes teacher
            aux = {"generation": gen, "previous": job.model.state_dict()}
            job.model = fresh_student(cfg, job.public, job.pid, generation=gen)
            job.opt = make_optimizer(cfg.distill.optimizer, list(job.model.parameters()), job.lr)
        if "previous" not in aux:
            return None  # first generation: plain response distillation
        previous = fresh_student(cfg, job.public, job.pid)
        previous.load_state_dict(aux["previous"])
        return BornAgainTerm(
            beta,
            predict_logits(previous, x_proxy) if len(x_proxy) else torch.zeros((0, 0)),
            predict_logits(previous, job.x_local),
            keep=aux,
        )
    # mutual: peers 1..peers-1 live on the device next to the reporting student
    peers = [
        fresh_student(cfg, job.public, job.pid, generation=100 + i)
        for i in range(1, cfg.distill.peers)
    ]
    opts = [make_optimizer(cfg.distill.optimizer, list(p.parameters()), job.lr) for p in peers]
    for i, (peer, opt) in enumerate(zip(peers, opts, strict=True)):
        if "peers" in aux and i < len(aux["peers"]):
            peer.load_state_dict(aux["peers"][i])
            opt.load_state_dict(aux["peer_opts"][i])
        for group in opt.param_groups:
            group["lr"] = job.lr
        peer.train()
    return MutualTerm(beta, peers, opts)
