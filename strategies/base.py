"""KDStrategy: the template every fedkd strategy follows (Flower Message API).

``start()`` runs the round loop over small hooks, like Flower's own strategies:

1. :meth:`KDStrategy.discover` (once): a ``query`` to every node; learns partition ids,
   private data sizes and class histograms. Sampling is then done over partition ids, so
   every transport (in-process, Ray, Flower's simulation, real SuperNodes) samples the
   same clients for the same seed.
2. per round: :meth:`configure_train` -> Grid -> :meth:`aggregate_train`, then
   :meth:`configure_evaluate` -> Grid -> :meth:`aggregate_evaluate`, then one metrics row.

Subclasses decide what soft targets to send (:meth:`round_targets`) and what to do with
the clients' proxy logits (:meth:`fuse_client_logits`).
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from fedkd.strategies.validation import (
    BASELINE_RULES,
    DISCOVERY_RULES,
    EVALUATE_RULES,
    TRAIN_RULES,
    MetricRule,
    check_histogram,
    check_reply,
    decode_record,
    reply_size,
)
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedkd import keys
from fedkd.compression import encode, encode_rows
from fedkd.config import FedkdConfig
from fedkd.devices import DeviceFleet, apply_policy, fails
from fedkd.errors import ConfigError, RunFailed
from fedkd.privacy.accounting import PrivacyPlan
from fedkd.privacy.client_dp import local_snr, noisy_mean
from fedkd.privacy.noise import TAG_CENTRAL, TAG_CLIENT_SAMPLING, noise_source
from fedkd.stats import percentile
from fedkd.teachers import TeacherBundle
from fedkd.traffic import Traffic

log = logging.getLogger("fedkd")

RoundCallback = Callable[[dict[str, Any]], None]


def teacher_targets(cfg: FedkdConfig, teachers: TeacherBundle, rule: str) -> np.ndarray:
    """The teachers' proxy logits fused with ``rule``; a config error without teachers."""
    if teachers.count == 0:
        raise ConfigError(f"strategy.name={cfg.strategy.name!r} needs teachers.count >= 1")
    if cfg.privacy.mode == "pate":
        if teachers.pate_targets is not None:  # the run's one release (see run_server)
            return teachers.pate_targets
        from fedkd.privacy.pate import pate_targets

        return pate_targets(cfg, teachers.proxy_logits)
    return teachers.fused(teachers.proxy_logits, rule, cfg.distill.temperature, **cfg.fusion_params)


class KDStrategy(Strategy):
    """Base of fedkd's distillation strategies.

    Parameters
    ----------
    cfg : FedkdConfig
        The resolved run configuration.
    num_proxy : int
        Size of the public proxy split.
    num_classes : int
        Number of classes.

    """

    name = "base"
    uses_teachers = False
    """The strategy distils from the server's teachers (the warm start may use them)."""
    collects_weights = False
    """Clients reply with their student's weights (``keys.WEIGHTS``), see fedavg/feddf."""
    privacy_modes: tuple[str, ...] = ("client_dp", "pate", "dp_sgd")
    """``privacy.mode`` values this strategy supports (``pate`` also needs teachers)."""
    train_accuracy_counts = True
    """A client's test accuracy after local training is its student accuracy. Strategies
    that send a global model (fedavg, feddf) set False: the evaluate phase then measures
    the global model on every evaluated client."""

    def __init__(self, cfg: FedkdConfig, num_proxy: int, num_classes: int) -> None:
        self.cfg = cfg
        self.num_proxy = num_proxy
        self.num_classes = num_classes
        self.traffic = Traffic()
        self.node_of: dict[int, int] = {}  # partition id -> node id
        self.client_info: dict[int, dict[str, Any]] = {}  # partition id -> size, histogram
        self.latest_accuracy: dict[int, float] = {}
        self.rejections: list[dict[str, Any]] = []
        self._round_rejections: list[dict[str, Any]] = []
        self._round_proxy_idx: dict[int, np.ndarray] = {}
        self._train_metrics: list[dict[str, float]] = []
        self._evaluated: list[int] = []
        self._reply_bytes: dict[int, int] = {}
        self.global_weights: ArrayRecord | None = None
        self.warm_weights: ArrayRecord | None = None
        self.warm_started: set[int] = set()  # partitions that received warm_weights
        self.fleet: DeviceFleet | None = None  # simulated device tiers (set_fleet)
        self.virtual_time = 0.0
        self.tier_stats: dict[str, dict[str, float]] = {}
        self._down_bytes: dict[int, int] = {}  # node -> bytes of its last instruction
        self._round_rows: dict[int, tuple[int, int]] = {}  # round -> (target rows, reply rows)
        self._round_keep: int | None = None
        self._round_devices: dict[str, Any] = {}
        self.privacy: PrivacyPlan | None = None
        self.target_rows: np.ndarray | None = None  # pate: the only rows targets may use
        self.knowledge: np.ndarray | None = None  # teacher features / maps per proxy row
        self.privacy_snr: list[float] = []  # client_dp: SNR of each round's consensus
        self._round_snr: float | None = None

    # ----------------------------------------------------------------- Flower hooks
    def summary(self) -> None:  # noqa: D102
        log.info(
            "strategy %s: %d clients, fraction %.2f, proxy fraction %.2f",
            self.name,
            self.cfg.num_clients,
            self.cfg.strategy.fraction,
            self.cfg.strategy.proxy_fraction,
        )

    def round_targets(
        self, server_round: int, proxy_idx: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(rows, logits)``: the soft targets to send in ``server_round``.

        ``proxy_idx`` are the rows clients reply on this round; a strategy may send
        targets on other rows (e.g. last round's consensus), or none: ``(rows[:0],
        logits of shape (0, C))`` means clients train on private data only.
        """
        raise NotImplementedError

    def fuse_client_logits(
        self, server_round: int, proxy_idx: np.ndarray, logits: np.ndarray, weights: np.ndarray
    ) -> None:
        """Use the clients' proxy logits ``(K, P, C)`` (default: ignore them)."""

    def reply_rows(self, server_round: int, proxy_idx: np.ndarray) -> np.ndarray:
        """Proxy rows clients reply with logits on (default: this round's proxy rows)."""
        return proxy_idx

    def fuse_client_weights(
        self, server_round: int, records: list[ArrayRecord], weights: np.ndarray
    ) -> None:
        """Use the clients' student weights (only when ``collects_weights``)."""

    #: attributes that change during a run and make up a checkpoint (subclasses extend)
    checkpoint_attrs: tuple[str, ...] = (
        "traffic",
        "node_of",
        "client_info",
        "latest_accuracy",
        "rejections",
        "global_weights",
        "warm_weights",
        "warm_started",
        "virtual_time",
        "tier_stats",
        "privacy_snr",
    )

    def checkpoint_state(self) -> dict[str, Any]:
        """What a resumed run needs to continue exactly (see :mod:`fedkd.checkpoint`)."""
        state: dict[str, Any] = {a: getattr(self, a) for a in self.checkpoint_attrs}
        model = getattr(self, "model", None)
        if isinstance(model, torch.nn.Module):
            state["model"] = model.state_dict()
        opt = getattr(self, "opt", None)
        if isinstance(opt, torch.optim.Optimizer):
            state["opt"] = opt.state_dict()
        return state

    def load_checkpoint_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`checkpoint_state`."""
        for a in self.checkpoint_attrs:
            setattr(self, a, state[a])
        if "model" in state:
            self.model.load_state_dict(state["model"])  # type: ignore[attr-defined]
        if "opt" in state:
            self.opt.load_state_dict(state["opt"])  # type: ignore[attr-defined]

    def set_warm_start(self, weights: ArrayRecord) -> None:
        """Ship ``weights`` as the initial student (see :mod:`fedkd.strategies.warm_start`)."""
        self.warm_weights = weights

    def _with_warm_start(self, record: RecordDict, partition: int) -> RecordDict:
        """``record`` plus the warm-start student for a client that has not had it yet."""
        if self.warm_weights is None or partition in self.warm_started:
            return record
        if keys.WEIGHTS in record.array_records:  # a global model supersedes it
            return record
        warm = RecordDict(dict(record.items()))
        warm[keys.WEIGHTS] = self.warm_weights
        return warm

    def weight_shapes(self) -> dict[str, tuple[int, ...]] | None:
        """Array shapes a weights reply must have (those of ``global_weights``)."""
        if not self.collects_weights or self.global_weights is None:
            return None
        return {k: tuple(v.shape) for k, v in self.global_weights.items()}

    def set_privacy(self, plan: PrivacyPlan, target_rows: np.ndarray | None = None) -> None:
        """Make the run private (see :mod:`fedkd.privacy`).

        Clients get the DP parameters with each instruction, client_dp uploads are noised
        before fusion, each round row carries its epsilon; ``target_rows`` (PATE) are the
        only proxy rows soft targets may be sent on.
        """
        self.privacy = plan
        self.target_rows = target_rows

    def set_knowledge(self, knowledge: np.ndarray) -> None:
        """Send ``knowledge[rows]`` with the soft targets of every instruction.

        ``knowledge`` holds teacher features or attention maps, one entry per proxy row
        (hint, rkd, attention).
        """
        self.knowledge = knowledge

    def set_fleet(self, fleet: DeviceFleet) -> None:
        """Simulate device tiers: availability, failures, virtual clock, round policy."""
        self.fleet = fleet

    def sample_partitions(
        self, server_round: int, fraction: float, tag: int, online_only: bool = False
    ) -> list[int]:
        """Seeded sample of partition ids (sorted) among the discovered clients.

        ``online_only`` (train sampling with device tiers): ``fraction`` of all clients
        is drawn among those online this round (``over_select``: ``k (1 + x)`` of them).
        """
        pool = sorted(self.node_of)
        k = min(len(pool), max(self.cfg.strategy.min_clients, int(round(fraction * len(pool)))))
        if online_only and self.fleet is not None:
            dev = self.cfg.devices
            pool = [p for p in pool if self.fleet.online(p, server_round)]
            self._round_keep = min(k, len(pool))
            self._round_devices["available"] = len(pool)
            if dev.policy == "over_select":
                k = int(np.ceil(k * (1 + dev.over_select)))
            k = min(k, len(pool))
        if k >= len(pool):
            return pool
        rng = np.random.default_rng([self.cfg.seed, tag, server_round])
        return sorted(int(p) for p in rng.choice(pool, size=k, replace=False))

    def train_partitions(self, server_round: int) -> list[int]:
        """The clients sampled to train in ``server_round``.

        Central client_dp with amplification samples each client independently with the
        accountant's rate q (Poisson), from the privacy noise source: a replay of the
        public seed must not tell who took part. Otherwise: :meth:`sample_partitions`.
        """
        plan = self.privacy
        if (
            plan is not None
            and plan.mechanism == "client_dp"
            and not plan.local
            and plan.sample_rate < 1
        ):
            pool = sorted(self.node_of)
            source = noise_source(
                not plan.private, self.cfg.seed, TAG_CLIENT_SAMPLING, server_round
            )
            take = source.uniform((len(pool),)) < plan.sample_rate
            return [p for p, t in zip(pool, take, strict=True) if t]
        return self.sample_partitions(
            server_round, self.cfg.strategy.fraction, tag=3, online_only=True
        )

    def proxy_subset(self, server_round: int) -> np.ndarray:
        """Proxy rows used in ``server_round`` (all, or a seeded subset)."""
        frac = self.cfg.strategy.proxy_fraction
        if frac >= 1.0:
            return np.arange(self.num_proxy, dtype=np.int64)
        k = max(1, int(round(frac * self.num_proxy)))
        rng = np.random.default_rng([self.cfg.seed, 5, server_round])
        return np.sort(rng.choice(self.num_proxy, size=k, replace=False)).astype(np.int64)

    def train_config(self, server_round: int) -> ConfigRecord:
        """Per-round hyperparameters sent to clients."""
        d = self.cfg.distill
        return ConfigRecord(
            {
                keys.SERVER_ROUND: server_round,
                keys.LOCAL_EPOCHS: d.local_epochs,
                keys.TEMPERATURE: d.temperature,
                keys.ALPHA: d.alpha,
                keys.LR: d.lr,
            }
        )

    def configure_train(  # noqa: D102
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        proxy_idx = self.proxy_subset(server_round)
        target_idx, targets = self.round_targets(server_round, proxy_idx)
        if self.target_rows is not None:  # PATE: labels exist on the queried rows only
            keep = np.isin(target_idx, self.target_rows)
            target_idx, targets = target_idx[keep], targets[keep]
        reply_idx = np.ascontiguousarray(self.reply_rows(server_round, proxy_idx), np.int64)
        self._round_proxy_idx[server_round] = reply_idx
        comp = self.cfg.compression
        encoded = encode(
            targets, comp.soft_labels, temperature=self.cfg.distill.temperature, k=comp.topk
        )
        encoded.update(encode_rows(target_idx, keys.PROXY_IDX))
        if self.knowledge is not None:
            dtype = np.float16 if comp.features == "fp16" else np.float32
            encoded[keys.KNOWLEDGE] = self.knowledge[target_idx].astype(dtype)
        if not np.array_equal(target_idx, reply_idx):
            encoded.update(encode_rows(reply_idx, keys.REPLY_IDX))
        arrays = {name: Array(np.ascontiguousarray(a)) for name, a in encoded.items()}
        self._round_rows[server_round] = (len(target_idx), len(reply_idx))
        conf = self.train_config(server_round)
        conf[keys.SEND_WEIGHTS] = self.collects_weights
        plan = self.privacy
        if plan is not None and plan.mechanism in ("client_dp", "dp_sgd"):
            conf[keys.DP_MODE] = plan.mechanism
            conf[keys.DP_NOISE] = plan.noise_multiplier
            conf[keys.DP_CLIP] = float(plan.clip or 0.0)
            conf[keys.DP_LOCAL] = plan.local
        record = RecordDict({keys.TARGETS: ArrayRecord(arrays), keys.CONFIG: conf})
        if self.global_weights is not None:
            record[keys.WEIGHTS] = self.global_weights
        parts = self.train_partitions(server_round)
        return [
            Message(
                self._with_warm_start(record, p),
                self.node_of[p],
                MessageType.TRAIN,
                group_id=str(server_round),
            )
            for p in parts
        ]

    def aggregate_train(  # noqa: D102
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        proxy_idx = self._round_proxy_idx.pop(server_round)
        self._evaluated = []
        good = self._accepted(
            replies,
            rules=TRAIN_RULES,
            logits_shape=(len(proxy_idx), self.num_classes),
            weight_shapes=self.weight_shapes(),
            same_size=True,
        )
        self._train_metrics = []
        if not good:
            return None, None
        # one (K, P, C) array; each reply's own copy is dropped once moved into it, so
        # a round of K clients holds its logits once (10,000 clients x 4,000 rows x 10
        # classes = 1.6 GB, not twice that)
        logits = np.empty((len(good), len(proxy_idx), self.num_classes), np.float32)
        weights, records = [], []
        for k, (pid, msg) in enumerate(good):
            self.warm_started.add(pid)
            m = msg.content.metric_records[keys.METRICS]
            self._train_metrics.append(
                {k: float(v) for k, v in m.items() if isinstance(v, int | float)}
            )  # type: ignore[misc]
            logits[k] = decode_record(
                msg.content.array_records[keys.REPLY_LOGITS], self.num_classes
            )
            del msg.content[keys.REPLY_LOGITS]
            weights.append(float(m[keys.NUM_EXAMPLES]))  # type: ignore[arg-type]
            if self.collects_weights:
                records.append(msg.content.array_records[keys.WEIGHTS])
            if not self.train_accuracy_counts:
                continue
            if keys.TEST_ACCURACY in m:  # range-checked in _accepted
                self.latest_accuracy[pid] = float(m[keys.TEST_ACCURACY])  # type: ignore[arg-type]
                self._evaluated.append(pid)
        if sum(weights) <= 0:  # every client reported 0 private samples: weigh them equally
            weights = [1.0] * len(weights)
        if self.collects_weights:
            self.fuse_client_weights(server_round, records, np.asarray(weights))
        w = np.asarray(weights)
        if self.privacy is not None and self.privacy.mechanism == "client_dp":
            logits, w = self._private_uploads(server_round, logits)
        self.fuse_client_logits(server_round, proxy_idx, logits, w)
        return None, MetricRecord(
            {k: float(np.mean([t[k] for t in self._train_metrics])) for k in (keys.TRAIN_LOSS,)}
        )

    def _private_uploads(
        self, server_round: int, logits: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """client_dp: the uploads the fusion may see, and their weights (all equal).

        Central: one ``(1, P, C)`` noisy mean of the clipped uploads. Local: the clients'
        own noisy uploads, re-clipped here only by the clients (each already noised).
        """
        plan = self.privacy
        assert plan is not None and plan.clip is not None
        if plan.local:
            self._round_snr = local_snr(logits, plan.clip, plan.noise_multiplier)
            self.privacy_snr.append(self._round_snr)
            return logits, np.ones(len(logits))
        source = noise_source(not plan.private, self.cfg.seed, TAG_CENTRAL, server_round)
        expected = plan.sample_rate * len(self.node_of)
        release, snr = noisy_mean(logits, plan.clip, plan.noise_multiplier, source, expected)
        self._round_snr = snr
        self.privacy_snr.append(snr)
        return release, np.ones(1)

    def configure_evaluate(  # noqa: D102
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        ev = self.cfg.evaluate
        last = server_round == self.cfg.rounds
        if not last and server_round % ev.every != 0:
            return []
        fraction = 1.0 if last else ev.fraction
        # clients trained this round already reported their test accuracy after training
        trained = set(self._evaluated)
        parts = [
            p for p in self.sample_partitions(server_round, fraction, tag=4) if p not in trained
        ]
        record = RecordDict({keys.CONFIG: ConfigRecord({keys.SERVER_ROUND: server_round})})
        if self.global_weights is not None:
            record[keys.WEIGHTS] = self.global_weights
        return [
            Message(
                self._with_warm_start(record, p),
                self.node_of[p],
                MessageType.EVALUATE,
                group_id=str(server_round),
            )
            for p in parts
        ]

    def aggregate_evaluate(  # noqa: D102
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        good = self._accepted(replies, rules=EVALUATE_RULES)
        for pid, msg in good:
            self.warm_started.add(pid)
            self.latest_accuracy[pid] = float(
                msg.content.metric_records[keys.METRICS][keys.TEST_ACCURACY]
            )  # type: ignore[arg-type]
            self._evaluated.append(pid)
        accs = [self.latest_accuracy[p] for p in self._evaluated]
        if not accs:
            return None
        return MetricRecord({"accuracy-mean": float(np.mean(accs))})

    # ----------------------------------------------------------------- helpers
    def _accepted(
        self,
        replies: Iterable[Message],
        *,
        required: tuple[str, ...] = (),
        rules: tuple[MetricRule, ...] = (),
        logits_shape: tuple[int, int] | None = None,
        weight_shapes: dict[str, tuple[int, ...]] | None = None,
        same_size: bool = False,
    ) -> list[tuple[int, Message]]:
        """Replies that pass :func:`check_reply`, as ``(partition id, message)`` sorted.

        A reply must come from a discovered node and claim that node's partition
        (``wrong_partition``); with ``same_size``, its ``num-examples`` must be the size
        the client reported at discovery (``inconsistent_size``). Every other reply is
        rejected with its kind and reason (:meth:`_reject`).
        """
        part_of = {n: p for p, n in self.node_of.items()}
        good = []
        for msg in replies:
            pid = part_of.get(msg.metadata.src_node_id, -1)
            rejection = check_reply(
                msg,
                required_metrics=required,
                rules=rules,
                logits_shape=logits_shape,
                max_bytes=self.cfg.strategy.max_reply_bytes,
                size=self._reply_bytes.get(id(msg)) or reply_size(msg),
                weight_shapes=weight_shapes,
            )
            if rejection is None:
                m = msg.content.metric_records[keys.METRICS]
                claimed = int(m[keys.PARTITION_ID])  # type: ignore[arg-type]
                node = msg.metadata.src_node_id
                if claimed != pid:
                    rejection = (
                        "wrong_partition",
                        f"reply claims partition {claimed} but node {node} is partition {pid}",
                    )
                elif same_size and keys.NUM_EXAMPLES in m:
                    known = int(self.client_info.get(pid, {}).get("size", -1))
                    size = int(m[keys.NUM_EXAMPLES])  # type: ignore[arg-type]
                    if size != known:
                        rejection = (
                            "inconsistent_size",
                            f"metric '{keys.NUM_EXAMPLES}' = {size}; partition {pid} "
                            f"reported {known} private samples at discovery (allowed: {known})",
                        )
            if rejection is not None:
                self._reject(pid, *rejection)
                continue
            good.append((pid, msg))
        return sorted(good, key=lambda t: t[0])

    def _require_valid(
        self, label: int | str, phase: str, valid: int, asked: int, floor: bool = False
    ) -> None:
        """Stop the run when too few of the ``asked`` replies of ``phase`` were valid.

        Fewer than ``strategy.min_valid_fraction`` of ``asked`` (rounded up) raises
        :class:`RunFailed` with one line: the phase, the counts and the rejection kinds
        (with one example reason); the phase's rejections are logged and kept under
        ``label`` first. ``floor``: at least one valid reply is needed even when the
        fraction is 0 (discovery, the local-only baseline).
        """
        if asked <= 0:
            return
        frac = self.cfg.strategy.min_valid_fraction
        need = min(asked, math.ceil(frac * asked - 1e-9))
        if floor:
            need = max(need, 1)
        if valid >= need:
            return
        kinds = Counter(r["kind"] for r in self._round_rejections).most_common()
        detail = ", ".join(f"{k} x{n}" for k, n in kinds) or "none recorded"
        if kinds:
            example = next(r["reason"] for r in self._round_rejections if r["kind"] == kinds[0][0])
            detail += f" (e.g. {example})"
        self._flush_rejections(label)
        raise RunFailed(
            f"{phase}: only {valid} of {asked} replies were valid and "
            f"strategy.min_valid_fraction={frac:g} needs {need}; rejected: {detail}"
        )

    def _exchange(
        self, grid: Grid, messages: list[Message], phase: str, timeout: float | None
    ) -> list[Message]:
        if not messages:
            return []
        self._down_bytes = {m.metadata.dst_node_id: reply_size(m) for m in messages}
        down = sum(self._down_bytes.values())
        expected = {m.metadata.dst_node_id for m in messages}
        replies = list(grid.send_and_receive(messages, timeout=timeout))
        # serialized once: the size counts as traffic and is checked in _accepted
        self._reply_bytes = {id(r): reply_size(r) for r in replies}
        up = sum(self._reply_bytes.values())
        self.traffic.add(phase, down, up)
        got = {r.metadata.src_node_id for r in replies}
        part_of = {n: p for p, n in self.node_of.items()}
        for node in sorted(expected - got):
            self._reject(part_of.get(node, -1), "no_reply", "no reply (timeout or node gone)")
        return replies

    # ----------------------------------------------------------------- discovery
    def wait_for_nodes(self, grid: Grid) -> list[int]:
        """Connected node ids, after waiting up to ``wait_for_clients_s`` for all of them."""
        deadline = time.monotonic() + self.cfg.strategy.wait_for_clients_s
        while True:
            nodes = sorted(grid.get_node_ids())
            if len(nodes) >= self.cfg.num_clients or time.monotonic() >= deadline:
                break
            log.info("waiting for clients: %d of %d connected", len(nodes), self.cfg.num_clients)
            time.sleep(1.0)
        if len(nodes) < self.cfg.strategy.min_clients:
            raise RunFailed(
                f"only {len(nodes)} client(s) connected after "
                f"{self.cfg.strategy.wait_for_clients_s:.0f} s; strategy.min_clients = "
                f"{self.cfg.strategy.min_clients}"
            )
        return nodes

    def discover(self, grid: Grid, timeout: float | None = None) -> None:  # noqa: D417
        """Ask every node for its partition id, data size and class histogram.

        Replies are range-checked: an integer partition id in ``[0, 2**31)`` (on fedkd's
        own engines, whose grid has ``partition_of``, exactly the node's partition), a size
        ``>= 0``, a histogram of ``num_classes`` counts summing to the size, the reply
        within ``strategy.max_reply_bytes``. A partition claimed by two nodes is ambiguous:
        every claim of it is rejected (``duplicate_partition``). Too few valid replies
        (:meth:`_require_valid`, at least one) stop the run.
        """
        nodes = self.wait_for_nodes(grid)
        record = RecordDict({keys.CONFIG: ConfigRecord({})})
        msgs = [Message(record, n, MessageType.QUERY, group_id="discover") for n in nodes]
        partition_of: Callable[[int], int] | None = getattr(grid, "partition_of", None)
        claims: dict[int, list[tuple[int, MetricRecord]]] = {}
        for reply in self._exchange(grid, msgs, "discover", timeout):
            node = reply.metadata.src_node_id
            expected = partition_of(node) if partition_of is not None else None
            rejection = check_reply(
                reply,
                rules=DISCOVERY_RULES,
                max_bytes=self.cfg.strategy.max_reply_bytes,
                size=self._reply_bytes.get(id(reply)) or reply_size(reply),
            )
            pid = -1 if expected is None else expected
            if rejection is None:
                m = reply.content.metric_records[keys.METRICS]
                pid = int(m[keys.PARTITION_ID])  # type: ignore[arg-type]
                rejection = check_histogram(m, self.num_classes, int(m[keys.NUM_EXAMPLES]))  # type: ignore[arg-type]
                if rejection is None and expected is not None and pid != expected:
                    rejection = (
                        "wrong_partition",
                        f"reply claims partition {pid} but node {node} is partition {expected} "
                        f"(allowed: {expected})",
                    )
                    pid = expected
            if rejection is not None:
                self._reject(pid, *rejection)
                continue
            claims.setdefault(pid, []).append((node, m))
        for pid, claimants in sorted(claims.items()):
            if len(claimants) > 1:
                others = sorted(n for n, _ in claimants)
                for _ in claimants:
                    self._reject(
                        pid,
                        "duplicate_partition",
                        f"partition {pid} is claimed by nodes {others}; all claims rejected",
                    )
                continue
            node, m = claimants[0]
            self.node_of[pid] = node
            self.client_info[pid] = {
                "size": int(m[keys.NUM_EXAMPLES]),  # type: ignore[arg-type]
                "histogram": [int(v) for v in m.get(keys.CLASS_HISTOGRAM, [])],  # type: ignore[union-attr]
            }
        self._require_valid("discover", "discovery", len(self.node_of), len(nodes), floor=True)
        self._flush_rejections("discover")

    def local_only_baseline(
        self, grid: Grid, epochs: int, timeout: float | None = None
    ) -> dict[int, float]:
        """Every client trains a fresh student on private data only; test accuracies.

        Replies are checked like the rounds' (an accuracy in [0, 1], the size reported at
        discovery). The baseline fails the run (:class:`RunFailed`) rather than reporting
        a mean over too few clients: fewer valid replies than
        ``strategy.min_valid_fraction`` of the clients, or none at all.
        """
        record = RecordDict({keys.CONFIG: ConfigRecord({keys.BASELINE_EPOCHS: epochs})})
        msgs = [
            Message(record, self.node_of[p], keys.QUERY_LOCAL_ONLY, group_id="baseline")
            for p in sorted(self.node_of)
        ]
        good = self._accepted(
            self._exchange(grid, msgs, "baseline", timeout),
            rules=BASELINE_RULES,
            same_size=True,
        )
        self._require_valid("baseline", "local-only baseline", len(good), len(msgs), floor=True)
        self._flush_rejections("baseline")
        return {
            pid: float(msg.content.metric_records[keys.METRICS][keys.LOCAL_ONLY_ACCURACY])  # type: ignore[arg-type]
            for pid, msg in good
        }

    # ----------------------------------------------------------------- template
    def start(  # type: ignore[override]
        self,
        grid: Grid,
        num_rounds: int,
        *,
        timeout: float | None = None,
        on_round: RoundCallback | None = None,
        start_round: int = 1,
    ) -> list[dict[str, Any]]:
        """Run rounds ``start_round..num_rounds``; returns one metrics row per round.

        ``timeout`` (default ``strategy.round_timeout_s``) bounds each phase's wait for
        replies. ``on_round`` is called with each row as soon as the round completes.
        ``start_round > 1`` continues a resumed run.
        """
        timeout = self.cfg.strategy.round_timeout_s if timeout is None else timeout
        self.summary()
        if not self.node_of:
            self.discover(grid, timeout)
        rows = []
        t_start = time.perf_counter()
        empty = ArrayRecord()
        checked = valid_total = 0  # rounds whose train replies were checked; valid replies
        for rnd in range(start_round, num_rounds + 1):
            t0 = time.perf_counter()
            down0, up0 = self.traffic.total_down, self.traffic.total_up
            train_msgs = list(self.configure_train(rnd, empty, ConfigRecord(), grid))
            replies = self._exchange(grid, train_msgs, "train", timeout)
            replies = self.apply_devices(rnd, train_msgs, replies)
            self.aggregate_train(rnd, replies)
            sampled = len(train_msgs)
            train_ok = len(self._train_metrics)
            asked = self._train_asked(rnd, train_msgs)
            del replies, train_msgs
            if asked:
                checked += 1
                valid_total += train_ok
                self._require_valid(rnd, f"round {rnd} train", train_ok, asked)
            # evaluate replies are checked one by one, not counted: a client still busy
            # with a late train call cannot answer its round's evaluate either
            eval_msgs = list(self.configure_evaluate(rnd, empty, ConfigRecord(), grid))
            self.aggregate_evaluate(rnd, self._exchange(grid, eval_msgs, "evaluate", timeout))
            row = self._round_row(rnd, sampled, train_ok, t0, t_start, down0, up0)
            rows.append(row)
            if on_round is not None:
                on_round(row)
        if checked and not valid_total:
            raise RunFailed(
                f"no train reply was valid in rounds {start_round}-{num_rounds}; rejected: "
                + ", ".join(f"{k} x{n}" for k, n in self.rejections_by_kind().items())
            )
        return rows

    def _train_asked(self, server_round: int, sent: list[Message]) -> int:
        """Train replies of ``server_round`` that validation counts (see ``min_valid_fraction``).

        All sampled clients, less those the device simulation accounts for itself:
        replies the round policy dropped as late, clients its ``failure_prob`` crashes
        this round; 0 for a void round (the round policy's outcome, not a validation
        failure).
        """
        dev = self._round_devices
        if self.fleet is None:
            return len(sent)
        if dev.get("void"):
            return 0
        part_of = {n: p for p, n in self.node_of.items()}
        crashes = 0
        for m in sent:
            pid = part_of.get(m.metadata.dst_node_id, -1)
            tier = self.cfg.tier(pid) if 0 <= pid < self.cfg.num_clients else None
            if tier is not None and fails(tier.failure_prob, self.cfg.seed, pid, server_round):
                crashes += 1
        return max(0, len(sent) - int(dev.get("dropped_late") or 0) - crashes)

    def _round_row(
        self, rnd: int, sampled: int, ok: int, t0: float, t_start: float, down0: int, up0: int
    ) -> dict[str, Any]:
        accs = [self.latest_accuracy[p] for p in self._evaluated]
        now = time.perf_counter()

        def mean_of(key: str) -> float | None:
            vals = [t[key] for t in self._train_metrics if key in t and np.isfinite(t[key])]
            return float(np.mean(vals)) if vals else None

        row = {
            "round": rnd,
            "sampled": sampled,
            "replies_ok": ok,
            "rejected": len(self._round_rejections),
            "rejections": self._round_rejections,
            "evaluated": len(accs),
            "student_accuracy_mean": float(np.mean(accs)) if accs else None,
            "student_accuracy_p10": percentile(accs, 10),
            "student_accuracy_min": float(np.min(accs)) if accs else None,
            "student_accuracy_max": float(np.max(accs)) if accs else None,
            "train_loss": mean_of(keys.TRAIN_LOSS),
            "distill_loss": mean_of(keys.DISTILL_LOSS),
            "ce_loss": mean_of(keys.CE_LOSS),
            "bytes_down": self.traffic.total_down - down0,
            "bytes_up": self.traffic.total_up - up0,
            "round_time_s": now - t0,
            "wall_time_s": now - t_start,
            "virtual_time_s": None,
            "epsilon": self.privacy.epsilon_after(rnd) if self.privacy is not None else None,
            "privacy_snr": self._round_snr,
            **self._round_devices,
        }
        self._round_devices = {}
        self._round_snr = None
        self._flush_rejections(rnd)
        return row

    def apply_devices(
        self, server_round: int, sent: list[Message], replies: list[Message]
    ) -> list[Message]:
        """Virtual clock and round policy over this round's train replies (tiers only).

        Each answering client's virtual time comes from its tier and the bytes of its
        own instruction and reply (:mod:`fedkd.devices`); the policy keeps some replies.
        Error replies (simulated crashes) stay in, to be rejected with their reason. A
        round whose kept replies number fewer than ``devices.min_replies`` is void: no
        reply is used. Counters go into the round's metrics row and ``tier_stats``.
        """
        n_targets, n_reply = self._round_rows.pop(server_round, (0, 0))
        if self.fleet is None:
            return replies
        dev = self.cfg.devices
        part_of = {n: p for p, n in self.node_of.items()}
        times: dict[int, float] = {}
        for r in replies:
            pid = part_of.get(r.metadata.src_node_id)
            if pid is None or r.has_error():
                continue
            times[pid] = self.fleet.time(
                pid,
                bytes_down=self._down_bytes.get(r.metadata.src_node_id, 0),
                bytes_up=self._reply_bytes.get(id(r), 0),
                n_proxy=n_targets,
                n_local=int(self.client_info.get(pid, {}).get("size", 0)),
                n_reply=n_reply,
            ).total_s
        keep = self._round_keep if self._round_keep is not None else len(times)
        outcome = apply_policy(dev.policy, times, deadline_s=dev.deadline_s, keep=keep)
        kept = set(outcome.kept)
        void = len(kept) < dev.min_replies
        if void:
            log.warning(
                "round %s is void: %d kept repl%s < devices.min_replies = %d",
                server_round,
                len(kept),
                "y" if len(kept) == 1 else "ies",
                dev.min_replies,
            )
        self.virtual_time += outcome.round_time_s
        sampled = [part_of.get(m.metadata.dst_node_id, -1) for m in sent]
        for pid in sampled:
            name = self.fleet.tiers[self.fleet.tier_index(pid)].name
            st = self.tier_stats.setdefault(
                name,
                {"sampled": 0, "kept": 0, "late": 0, "failed": 0, "time_sum": 0.0, "timed": 0},
            )
            st["sampled"] += 1
            if pid in times:
                st["time_sum"] += times[pid]
                st["timed"] += 1
                if pid not in kept:
                    st["late"] += 1
                elif not void:
                    st["kept"] += 1
            else:
                st["failed"] += 1
        self._round_devices = {
            "available": self._round_devices.get("available"),
            "kept": 0 if void else len(kept),
            "dropped_late": len(outcome.late),
            "failed": len(sampled) - len(times),
            "void": void,
            "round_virtual_time_s": outcome.round_time_s,
            "virtual_time_s": self.virtual_time,
        }
        self._round_keep = None
        return [
            r
            for r in replies
            if r.has_error() or (not void and part_of.get(r.metadata.src_node_id) in kept)
        ]

    def _reject(self, partition: int, kind: str, reason: str) -> None:
        log.info("rejected reply from partition %s (%s): %s", partition, kind, reason)
        self._round_rejections.append({"partition": partition, "kind": kind, "reason": reason})

    def rejections_by_kind(self) -> dict[str, int]:
        """How many replies were rejected, per kind (over the whole run)."""
        return dict(Counter(r["kind"] for r in self.rejections))

    def _flush_rejections(self, label: int | str) -> None:
        """Log one warning per distinct rejection reason and keep them for the summary."""
        if self._round_rejections:
            counts = Counter(r["reason"] for r in self._round_rejections)
            for reason, n in counts.most_common():
                log.warning(
                    "round %s: rejected %d repl%s: %s", label, n, "y" if n == 1 else "ies", reason
                )
        self.rejections.extend({"round": label, **r} for r in self._round_rejections)
        self._round_rejections = []
