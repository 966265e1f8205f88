"""Flower ClientApp: each node keeps its own student and trains it by distillation.

Handlers map Flower Messages onto the pure functions of :mod:`fedkd.training`:

* ``train``: distil on the received soft targets + cross-entropy on private data, reply
  with logits on the same proxy rows, train losses and test accuracy.
* ``evaluate``: test accuracy of the current student.
* ``query``: partition id, private data size and class histogram (never the data).
* ``query.local_only``: train a fresh student on private data only (baseline).

The student and its optimizer state persist in ``context.state`` between rounds.
"""

from __future__ import annotations

import functools
import io
import json
import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedkd import keys
from fedkd.attacks import corrupt_logits, flip_labels, malicious_partitions
from fedkd.compression import decode, decode_rows, encode, has_rows
from fedkd.config import DataConfig, FedkdConfig, PrivacyConfig
from fedkd.data import client_partitions, load_npz, make_splits
from fedkd.devices import fails
from fedkd.kd_terms import AttentionTerm, BornAgainTerm, ExtraTerm, HintTerm, MutualTerm, RKDTerm
from fedkd.knowledge import features_and_logits, method_of
from fedkd.losses import ROW_LOSSES
from fedkd.losses.born_again import generation_of
from fedkd.losses.hint import HintAdapter
from fedkd.models import build_seeded_model
from fedkd.parse_lock import record_numpy, record_state_dict
from fedkd.privacy.client_dp import clip_upload, local_noise
from fedkd.privacy.noise import TAG_DP_SGD, TAG_LOCAL, noise_source
from fedkd.stacked_training import Cohort, Member
from fedkd.training import (
    DistillStats,
    evaluate,
    fit_distill,
    fit_supervised,
    make_optimizer,
    predict_logits,
)
from fedkd.validation import load_config
from fedkd.views import student_shape, student_x, view_samples

app = ClientApp()


class DeviceFailure(RuntimeError):
    """A simulated device crash (``devices.tiers[].failure_prob``)."""


_STATE_KEY = "fedkd-student"


def config_from_run_config(run_config: dict[str, object]) -> FedkdConfig:
    """Resolve the fedkd config carried by a Flower run config.

    In-process engines pass the resolved config as JSON (``fedkd-config-json``); ``flwr run``
    passes a TOML path (``config``, absolute or relative to the app directory) and
    ``overrides`` (``;``-separated ``dotted.key=value``). An empty run config (as
    ``flwr.simulation.run_simulation`` passes) falls back to the JSON config in the
    ``FEDKD_CONFIG_JSON`` environment variable when it is set.
    """
    blob = run_config.get(keys.RUN_CONFIG_JSON) or (
        os.environ.get(keys.ENV_CONFIG_JSON) if not run_config else None
    )
    if blob:
        return _config_from_json(str(blob))
    path = Path(str(run_config.get(keys.RUN_CONFIG_PATH, "simulations/quickstart.toml")))
    if not path.is_absolute() and not path.is_file():
        path = Path(__file__).resolve().parents[1] / path
    overrides = [o for o in str(run_config.get(keys.RUN_OVERRIDES, "")).split(";") if o.strip()]
    return load_config(path, overrides)


@functools.lru_cache(maxsize=8)
def _config_from_json(blob: str) -> FedkdConfig:
    return FedkdConfig.model_validate(json.loads(blob))


@dataclass(frozen=True)
class _Shared:
    """Tensors every client of a run shares: proxy inputs, test set, shapes."""

    x_proxy: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    input_shape: tuple[int, ...]
    num_classes: int


def _shared(cfg: FedkdConfig) -> _Shared:
    return _shared_data(cfg.data, cfg.seed)


@functools.lru_cache(maxsize=4)
def _shared_data(data: DataConfig, seed: int) -> _Shared:
    splits = make_splits(data, seed)
    return _Shared(
        torch.from_numpy(student_x(data, splits, splits.proxy, seed)),
        torch.from_numpy(student_x(data, splits, splits.test, seed)),
        torch.from_numpy(splits.data.y[splits.test]),
        student_shape(data, splits, seed),
        splits.data.num_classes,
    )


def _private_data(
    cfg: FedkdConfig, context: Context, partition_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The node's private data: its own ``data-path`` file, or its simulated partition."""
    path = context.node_config.get(keys.NODE_DATA_PATH)
    if path:
        return _device_file(cfg.data, cfg.seed, str(path))
    idx = client_partitions(cfg.data, cfg.partition, cfg.num_clients, cfg.seed)[partition_id]
    splits = make_splits(cfg.data, cfg.seed)
    x = student_x(cfg.data, splits, idx, cfg.seed)
    return torch.from_numpy(x), torch.from_numpy(splits.data.y[idx])


@functools.lru_cache(maxsize=4)
def _device_file(data: DataConfig, seed: int, path: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A device's own ``.npz`` (``x``, ``y``), checked against the federation's data."""
    ds = load_npz(path, data, seed)
    splits = make_splits(data, seed)
    if ds.input_shape != splits.data.input_shape:
        raise ValueError(
            f"data-path {path}: samples have shape {ds.input_shape}, the federation uses "
            f"{splits.data.input_shape}"
        )
    if ds.num_classes > splits.data.num_classes:
        raise ValueError(
            f"data-path {path}: label {ds.num_classes - 1} outside the federation's "
            f"{splits.data.num_classes} classes"
        )
    # the device's sensor gives the students' view
    x = view_samples(data.student_view, splits.normalize(ds.x), seed)
    return torch.from_numpy(x), torch.from_numpy(ds.y)


def _partition_id(context: Context, cfg: FedkdConfig) -> int:
    """The node's client id: ``partition-id`` from its node config.

    A device with its own ``data-path`` may omit it; its node id then serves as client id.
    """
    if context.node_config.get(keys.NODE_DATA_PATH):
        raw = context.node_config.get(keys.NODE_PARTITION_ID, context.node_id % 2**31)
        return int(raw)  # type: ignore[arg-type]
    if keys.NODE_PARTITION_ID not in context.node_config:
        raise ValueError(
            "node config has neither 'partition-id' nor 'data-path'; start the SuperNode "
            "with --node-config 'partition-id=I num-partitions=N' or 'data-path=\"FILE.npz\"'"
        )
    pid = int(context.node_config[keys.NODE_PARTITION_ID])  # type: ignore[arg-type]
    if not 0 <= pid < cfg.num_clients:
        raise ValueError(f"partition-id {pid} outside 0..{cfg.num_clients - 1}")
    return pid


def _fresh_student(
    cfg: FedkdConfig, shared: _Shared, partition_id: int, generation: int = 0
) -> torch.nn.Module:
    """The client's initial student (``generation`` > 0: a born-again or peer student)."""
    return build_seeded_model(
        cfg.student_model(partition_id),
        shared.input_shape,
        shared.num_classes,
        _seed(cfg.seed, partition_id, generation, 2),
    )


def _load_student(
    context: Context, cfg: FedkdConfig, shared: _Shared, partition_id: int
) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    model = _fresh_student(cfg, shared, partition_id)
    opt = make_optimizer(cfg.distill.optimizer, list(model.parameters()), cfg.distill.lr)
    state = _load_blob(context, _STATE_KEY)
    if state:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
    return model, opt


def _save_student(context: Context, model: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
    _save_blob(context, _STATE_KEY, {"model": model.state_dict(), "opt": opt.state_dict()})


def _load_blob(context: Context, key: str) -> dict[str, Any]:
    """The tensors dict stored under ``key`` in the node's state ({} when absent)."""
    if key not in context.state:
        return {}
    blob = context.state.config_records[key]["blob"]
    return dict(torch.load(io.BytesIO(blob), weights_only=True))  # type: ignore[arg-type]


def _save_blob(context: Context, key: str, state: dict[str, Any]) -> None:
    """Store a dict of tensors (and plain values) under ``key`` in the node's state."""
    buf = io.BytesIO()
    torch.save(state, buf)
    context.state[key] = ConfigRecord({"blob": buf.getvalue()})


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


def _generator(cfg: FedkdConfig, partition_id: int, server_round: int, tag: int) -> torch.Generator:
    return torch.Generator().manual_seed(_seed(cfg.seed, partition_id, server_round, tag))


def _setup(context: Context) -> tuple[FedkdConfig, _Shared, int]:
    cfg = config_from_run_config(dict(context.run_config))
    torch.set_num_threads(cfg.threads)
    return cfg, _shared(cfg), _partition_id(context, cfg)


def _reply(
    msg: Message, metrics: dict[str, float | int | list[int]], arrays: ArrayRecord | None = None
) -> Message:
    content = RecordDict({keys.METRICS: MetricRecord(metrics)})  # type: ignore[arg-type]
    if arrays is not None:
        content[keys.REPLY_LOGITS] = arrays
    return Message(content, reply_to=msg)


@dataclass
class _TrainJob:
    """One client's train instruction, decoded and checked, with its student loaded."""

    cfg: FedkdConfig
    shared: _Shared
    pid: int
    rnd: int
    malicious: bool
    x_local: torch.Tensor
    y_local: torch.Tensor
    model: torch.nn.Module
    opt: torch.optim.Optimizer
    proxy_idx: torch.Tensor
    soft: torch.Tensor
    knowledge: torch.Tensor | None
    reply_idx: torch.Tensor
    epochs: int
    temperature: float
    alpha: float
    lr: float
    gen: torch.Generator
    send_weights: bool
    dp_mode: str
    dp_noise: float
    dp_clip: float
    dp_local: bool
    dp_reproducible: bool = False

    def cohort_key(self) -> tuple[object, ...]:
        """Jobs with equal keys can train as one vectorized cohort."""
        d = self.cfg.distill
        return (
            self.cfg.student_model(self.pid),
            d.optimizer,
            d.loss,
            d.batch_size,
            self.epochs,
            self.temperature,
            self.alpha,
            self.lr,
            self.proxy_idx.numpy().tobytes(),
            self.soft.numpy().tobytes(),
            self.reply_idx.numpy().tobytes(),
            self.send_weights,
            self.dp_mode,
        )


def _prepare_train(msg: Message, context: Context) -> _TrainJob:
    cfg, shared, pid = _setup(context)
    record = msg.content.array_records[keys.TARGETS]
    targets = record_numpy(record)
    proxy_idx = torch.from_numpy(decode_rows(targets, keys.PROXY_IDX))
    soft = torch.from_numpy(decode(targets, shared.num_classes))
    knowledge = (
        torch.from_numpy(np.asarray(targets[keys.KNOWLEDGE], np.float32))
        if keys.KNOWLEDGE in targets
        else None
    )
    reply_idx = (
        torch.from_numpy(decode_rows(targets, keys.REPLY_IDX))
        if has_rows(targets, keys.REPLY_IDX)
        else proxy_idx
    )
    conf = msg.content.config_records[keys.CONFIG]
    rnd = int(conf[keys.SERVER_ROUND])  # type: ignore[arg-type]
    tier = cfg.tier(pid)
    if tier is not None and fails(tier.failure_prob, cfg.seed, pid, rnd):
        raise DeviceFailure(
            f"simulated crash of a {tier.name!r} device in round {rnd} "
            f"(failure_prob {tier.failure_prob})"
        )
    if (
        proxy_idx.ndim != 1
        or soft.ndim != 2
        or len(soft) != len(proxy_idx)
        or soft.shape[-1] != shared.num_classes
    ):
        raise ValueError(
            f"soft targets {tuple(soft.shape)} do not match proxy rows {tuple(proxy_idx.shape)}"
        )
    if knowledge is not None and len(knowledge) != len(proxy_idx):
        raise ValueError(
            f"teacher knowledge {tuple(knowledge.shape)} does not match proxy rows "
            f"{tuple(proxy_idx.shape)}"
        )
    x_local, y_local = _private_data(cfg, context, pid)
    malicious = pid in malicious_partitions(cfg.num_clients, cfg.attack.fraction, cfg.seed)
    if malicious and cfg.attack.kind == "label_flip":
        y_local = torch.from_numpy(flip_labels(y_local.numpy(), shared.num_classes))
    model, opt = _load_student(context, cfg, shared, pid)
    if keys.WEIGHTS in msg.content.array_records:
        opt = _adopt_weights(cfg, model, msg.content.array_records[keys.WEIGHTS])
    lr = float(conf.get(keys.LR, cfg.distill.lr))  # type: ignore[arg-type]
    for group in opt.param_groups:
        group["lr"] = lr
    return _TrainJob(
        cfg=cfg,
        shared=shared,
        pid=pid,
        rnd=rnd,
        malicious=malicious,
        x_local=x_local,
        y_local=y_local,
        model=model,
        opt=opt,
        proxy_idx=proxy_idx,
        soft=soft,
        knowledge=knowledge,
        reply_idx=reply_idx,
        epochs=int(conf.get(keys.LOCAL_EPOCHS, cfg.distill.local_epochs)),  # type: ignore[arg-type]
        temperature=float(conf.get(keys.TEMPERATURE, cfg.distill.temperature)),  # type: ignore[arg-type]
        alpha=float(conf.get(keys.ALPHA, cfg.distill.alpha)),  # type: ignore[arg-type]
        lr=lr,
        gen=_generator(cfg, pid, rnd, 0),
        send_weights=bool(conf.get(keys.SEND_WEIGHTS, False)),
        **_dp_parameters(cfg, context, conf),
    )


def _dp_parameters(cfg: FedkdConfig, context: Context, conf: ConfigRecord) -> dict[str, Any]:
    """The DP parameters the client applies this round.

    Local client_dp protects the client from the server, so the server's instruction can
    never lower it: when the client's own configuration asks for local DP (its node config
    ``local-dp-noise-multiplier`` / ``local-dp-clip``, set by the device owner, or else the
    scenario it loaded), it applies at least its own noise multiplier with its own clip,
    whatever the instruction says.
    """
    mode = str(conf.get(keys.DP_MODE, ""))
    noise = float(conf.get(keys.DP_NOISE, 0.0))  # type: ignore[arg-type]
    clip = float(conf.get(keys.DP_CLIP, 0.0))  # type: ignore[arg-type]
    local = bool(conf.get(keys.DP_LOCAL, False))
    own = _own_local_dp(cfg, context)
    if own is not None:
        own_noise, own_clip, reproducible = own
        return {
            "dp_mode": "client_dp",
            "dp_noise": max(own_noise, noise if mode == "client_dp" and local else 0.0),
            "dp_clip": own_clip,
            "dp_local": True,
            "dp_reproducible": reproducible,
        }
    return {
        "dp_mode": mode,
        "dp_noise": noise,
        "dp_clip": clip,
        "dp_local": local,
        "dp_reproducible": cfg.privacy.reproducible_noise,
    }


def _own_local_dp(cfg: FedkdConfig, context: Context) -> tuple[float, float, bool] | None:
    """``(noise multiplier, clip, reproducible)`` of the client's own local DP, or None."""
    node = context.node_config
    if keys.NODE_LOCAL_DP_NOISE in node:
        clip = float(node.get(keys.NODE_LOCAL_DP_CLIP, cfg.privacy.clip))  # type: ignore[arg-type]
        noise = float(node[keys.NODE_LOCAL_DP_NOISE])  # type: ignore[arg-type]
        if not (noise > 0 and math.isfinite(noise) and clip > 0 and math.isfinite(clip)):
            raise ValueError(
                f"node config {keys.NODE_LOCAL_DP_NOISE}={noise} / {keys.NODE_LOCAL_DP_CLIP}="
                f"{clip}: both must be finite and > 0"
            )
        return noise, clip, False  # a device owner's floor: always cryptographic noise
    p = cfg.privacy
    if p.mode != "client_dp" or not p.local:
        return None
    return _planned_local_noise(p, cfg.rounds), p.clip, p.reproducible_noise


@functools.lru_cache(maxsize=8)
def _planned_local_noise(p: PrivacyConfig, rounds: int) -> float:
    """Local client_dp's noise multiplier from the client's own config (q = 1)."""
    from fedkd.privacy.accounting import planned_noise

    return planned_noise(p, 1.0, rounds)


def _adopt_weights(
    cfg: FedkdConfig, model: torch.nn.Module, record: ArrayRecord
) -> torch.optim.Optimizer:
    """Load a global student (fedavg, feddf) into ``model``; a fresh optimizer for it."""
    state = record_state_dict(record)
    own = model.state_dict()
    if set(state) != set(own) or any(state[k].shape != own[k].shape for k in own):
        raise ValueError(
            f"received weights do not fit student {cfg.student.model!r}: arrays "
            f"{sorted((k, tuple(v.shape)) for k, v in state.items())}"
        )
    model.load_state_dict(state)
    return make_optimizer(cfg.distill.optimizer, list(model.parameters()), cfg.distill.lr)


def _finish_train(
    msg: Message,
    context: Context,
    job: _TrainJob,
    stats: DistillStats,
    logits: np.ndarray,
    acc: float,
) -> Message:
    """Save the student, corrupt the reply if the client is malicious, build the reply."""
    _save_student(context, job.model, job.opt)
    logits = logits.astype(np.float32).reshape(len(job.reply_idx), job.shared.num_classes)
    if job.malicious:
        cfg = job.cfg
        rng = np.random.default_rng([cfg.seed, 12, job.pid, job.rnd])
        logits = corrupt_logits(logits, cfg.attack.kind, cfg.attack.scale, rng)
    if job.dp_mode == "client_dp" and len(logits):  # clip (and noise) before it leaves
        logits = clip_upload(logits, job.dp_clip)
        if job.dp_local:
            source = noise_source(job.dp_reproducible, job.cfg.seed, TAG_LOCAL, job.pid, job.rnd)
            logits = local_noise(logits, job.dp_clip, job.dp_noise, source)
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
    reply = _reply(
        msg,
        metrics,
        ArrayRecord(
            {name: Array(np.ascontiguousarray(a)) for name, a in _encoded(job, logits).items()}
        ),
    )
    if job.send_weights:
        reply.content[keys.WEIGHTS] = ArrayRecord(job.model.state_dict())
    return reply


def _encoded(job: _TrainJob, logits: np.ndarray) -> dict[str, np.ndarray]:
    """The reply's logits, encoded as ``compression`` says (plain fp32 when not uplink)."""
    comp = job.cfg.compression
    kind = comp.soft_labels if comp.uplink else "fp32"
    return encode(logits, kind, temperature=job.temperature, k=comp.topk)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Distil the student on the received soft targets plus private cross-entropy."""
    return _train_job(msg, context, _prepare_train(msg, context))


def _reply_logits_and_accuracy(job: _TrainJob) -> tuple[np.ndarray, float]:
    """The trained student's logits on the reply rows and its test accuracy."""
    logits = (
        predict_logits(job.model, job.shared.x_proxy[job.reply_idx]).numpy()
        if len(job.reply_idx)
        else np.zeros((0, job.shared.num_classes), np.float32)
    )
    return logits, evaluate(job.model, job.shared.x_test, job.shared.y_test)


def _train_job(msg: Message, context: Context, job: _TrainJob) -> Message:
    extra = _extra_term(context, job)  # may start a new born-again generation in job
    args = (job.model, job.opt, job.x_local, job.y_local, job.shared.x_proxy[job.proxy_idx])
    common = {
        "epochs": job.epochs,
        "batch_size": job.cfg.distill.batch_size,
        "temperature": job.temperature,
        "alpha": job.alpha,
        "gen": job.gen,
        "loss": job.cfg.distill.loss,
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
        _save_aux(context, extra.state())
    return _finish_train(msg, context, job, stats, *_reply_logits_and_accuracy(job))


_AUX_KEY = "fedkd-aux"


def _load_aux(context: Context) -> dict[str, Any]:
    """Modules a catalogue method keeps on the device (adapter, peers, previous generation)."""
    return _load_blob(context, _AUX_KEY)


def _save_aux(context: Context, state: dict[str, Any]) -> None:
    if state:
        _save_blob(context, _AUX_KEY, state)


def _extra_term(context: Context, job: _TrainJob) -> ExtraTerm | None:
    """The catalogue method's client-side term for this job (None: response only).

    ``born_again`` may replace ``job.model`` / ``job.opt`` with a fresh student when the
    round starts a new generation for this client.
    """
    cfg = job.cfg
    method = method_of(cfg.distill.loss)
    if method is None or method.name in ("response", "takd"):
        return None
    beta = cfg.distill.beta_or(method.default_beta)
    aux = _load_aux(context)
    x_proxy = job.shared.x_proxy[job.proxy_idx]
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
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(_seed(cfg.seed, job.pid, 0, 5))
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
            job.model = _fresh_student(cfg, job.shared, job.pid, generation=gen)
            job.opt = make_optimizer(cfg.distill.optimizer, list(job.model.parameters()), job.lr)
        if "previous" not in aux:
            return None  # first generation: plain response distillation
        previous = _fresh_student(cfg, job.shared, job.pid)
        previous.load_state_dict(aux["previous"])
        return BornAgainTerm(
            beta,
            predict_logits(previous, x_proxy) if len(x_proxy) else torch.zeros((0, 0)),
            predict_logits(previous, job.x_local),
            keep=aux,
        )
    # mutual: peers 1..peers-1 live on the device next to the reporting student
    peers = [
        _fresh_student(cfg, job.shared, job.pid, generation=100 + i)
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


def train_cohort(
    pairs: list[tuple[Message, Context]],
    cohort_size: int,
    workers: int,
    done: Callable[[int, Message | Exception], None] | None = None,
    acquire: Callable[[int], Context] | None = None,
) -> list[Message | Exception]:
    """Vectorized ``train`` for many nodes at once (see :mod:`fedkd.stacked_training`).

    Nodes are ordered by private data size (similar sizes share a cohort: less padding)
    and cut into balanced windows of at most ``cohort_size`` (at least one per worker);
    a window's jobs that share architecture,
    hyperparameters and soft targets train as one cohort. ``workers`` windows run at once,
    on one torch thread each (on CPU, two single-threaded cohorts beat one cohort on two
    threads). A window is decoded only when it runs, so memory grows with
    ``workers x cohort_size``, not with the number of nodes. ``done(i, reply)`` is called
    as soon as pair ``i`` is finished (the engine stores its state then); ``acquire(i)``,
    when given, returns pair ``i``'s full Context just before its window runs (the pairs
    may then carry contexts without state). Each node ends
    with the same student, optimizer state and reply as after :func:`train` (up to float
    rounding). Returns one reply, or the exception that node's instruction raised, per pair.
    """
    out: list[Message | Exception] = [ValueError("not run")] * len(pairs)
    order = sorted(range(len(pairs)), key=lambda i: (_private_size(pairs[i][1]), i))
    # at least one window per worker, at most cohort_size nodes each, sizes balanced
    # (20 nodes on 2 workers: 10 + 10, not 16 + 4)
    n = len(order)
    n_win = max(min(max(1, workers), n), math.ceil(n / max(1, cohort_size))) if n else 0
    windows = [order[w * n // n_win : (w + 1) * n // n_win] for w in range(n_win)]

    def finish(i: int, reply: Message | Exception) -> None:
        out[i] = reply
        if done is not None:
            done(i, reply)

    def run(window: list[int]) -> None:
        jobs: dict[int, _TrainJob] = {}
        for i in window:
            if acquire is not None:
                pairs[i] = (pairs[i][0], acquire(i))
            try:
                jobs[i] = _prepare_train(*pairs[i])
            except Exception as err:  # noqa: BLE001 - reported as this node's error reply
                finish(i, err)
        groups: dict[tuple[object, ...], list[int]] = {}
        for i, job in jobs.items():
            groups.setdefault(job.cohort_key(), []).append(i)
        for members in groups.values():
            try:
                replies: list[Message | Exception] = list(
                    _train_chunk([pairs[i] for i in members], [jobs[i] for i in members])
                )
            except Exception as err:  # noqa: BLE001 - every node of the cohort fails alike
                replies = [err] * len(members)
            for i, reply in zip(members, replies, strict=True):
                finish(i, reply)

    torch.set_num_threads(1)
    if workers <= 1 or len(windows) <= 1:
        for window in windows:
            run(window)
    else:
        with ThreadPoolExecutor(workers, thread_name_prefix="fedkd-cohort") as pool:
            list(pool.map(run, windows))
    return out


def _private_size(context: Context) -> int:
    """Private data size of a node (0 when its config is broken: its job will say why)."""
    try:
        cfg = config_from_run_config(dict(context.run_config))
        return len(_private_data(cfg, context, _partition_id(context, cfg))[1])
    except Exception:  # noqa: BLE001 - the error surfaces when the job is prepared
        return 0


def _train_chunk(pairs: list[tuple[Message, Context]], jobs: list[_TrainJob]) -> list[Message]:
    first = jobs[0]
    if first.cfg.distill.loss not in ROW_LOSSES or first.dp_mode == "dp_sgd":
        # no per-row form, or Opacus DP-SGD: one client after another
        return [_train_job(msg, ctx, job) for (msg, ctx), job in zip(pairs, jobs, strict=True)]
    cohort = Cohort([Member(j.model, j.opt, j.x_local, j.y_local, j.gen) for j in jobs])
    stats = cohort.fit_distill(
        first.shared.x_proxy[first.proxy_idx],
        first.soft,
        epochs=first.epochs,
        batch_size=first.cfg.distill.batch_size,
        temperature=first.temperature,
        alpha=first.alpha,
        lr=first.lr,
        loss=first.cfg.distill.loss,
    )
    cohort.write_back()
    # inference one model at a time: on CPU, stacked forward passes over inputs shared by
    # every model are about 2x slower than the models' own forward passes
    return [
        _finish_train(msg, ctx, job, st, *_reply_logits_and_accuracy(job))
        for (msg, ctx), job, st in zip(pairs, jobs, stats, strict=True)
    ]


@app.evaluate()
def evaluate_student(msg: Message, context: Context) -> Message:
    """Test accuracy of the current student (a fresh student before any training)."""
    cfg, shared, pid = _setup(context)
    model, opt = _load_student(context, cfg, shared, pid)
    if keys.WEIGHTS in msg.content.array_records:  # a global model: the client adopts it
        opt = _adopt_weights(cfg, model, msg.content.array_records[keys.WEIGHTS])
        _save_student(context, model, opt)
    return _reply(
        msg,
        {
            keys.NUM_EXAMPLES: len(shared.y_test),
            keys.PARTITION_ID: pid,
            keys.TEST_ACCURACY: evaluate(model, shared.x_test, shared.y_test),
        },
    )


@app.query()
def query_info(msg: Message, context: Context) -> Message:
    """Partition id, private data size and class histogram (counts only, never data)."""
    cfg, shared, pid = _setup(context)
    _, y_local = _private_data(cfg, context, pid)
    hist = np.bincount(y_local.numpy(), minlength=shared.num_classes).astype(int).tolist()
    return _reply(
        msg,
        {keys.PARTITION_ID: pid, keys.NUM_EXAMPLES: len(y_local), keys.CLASS_HISTOGRAM: hist},
    )


@app.query("local_only")
def query_local_only(msg: Message, context: Context) -> Message:
    """Baseline: a fresh student trained on private data only; its test accuracy."""
    cfg, shared, pid = _setup(context)
    epochs = int(msg.content.config_records[keys.CONFIG][keys.BASELINE_EPOCHS])  # type: ignore[arg-type]
    x_local, y_local = _private_data(cfg, context, pid)
    model = _fresh_student(cfg, shared, pid)
    opt = make_optimizer(cfg.distill.optimizer, list(model.parameters()), cfg.distill.lr)
    fit_supervised(
        model,
        opt,
        x_local,
        y_local,
        epochs=epochs,
        batch_size=cfg.distill.batch_size,
        gen=_generator(cfg, pid, 0, 1),
    )
    return _reply(
        msg,
        {
            keys.PARTITION_ID: pid,
            keys.NUM_EXAMPLES: len(y_local),
            keys.LOCAL_ONLY_ACCURACY: evaluate(model, shared.x_test, shared.y_test),
        },
    )
