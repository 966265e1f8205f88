"""KDStrategy: the template every fedkd strategy follows (Flower Message API).

``start()`` runs the round loop over small hooks, like Flower's own strategies:

1. :meth:`KDStrategy.discover` (once): a ``query`` to every node; learns partition ids,
   private data sizes and class histograms (:mod:`fedkd.strategies.discovery`).
2. per round: :meth:`configure_train` (creates the round's
   :class:`~fedkd.strategies.round_plan.RoundPlan`) -> Grid -> device simulation
   (:meth:`apply_devices`) -> :meth:`aggregate_train`, then :meth:`configure_evaluate` ->
   Grid -> :meth:`aggregate_evaluate`, then one metrics row
   (:mod:`fedkd.strategies.round_row`).

Subclasses decide what soft targets to send (:meth:`round_targets`), on which rows clients
reply (:meth:`reply_rows`) and what to do with the clients' proxy logits
(:meth:`fuse_client_logits`) or weights (:meth:`fuse_client_weights`). Uploads pass the
server half of the upload chain (:mod:`fedkd.uploads`) before fusion. Replies are checked
by :mod:`fedkd.strategies.validation` and rejections kept in a
:class:`~fedkd.strategies.rejections.RejectionLog`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from fedkd.strategies.checkpointing import restore_strategy_state, strategy_state
from fedkd.strategies.instructions import add_dp_config, instructions, target_arrays
from fedkd.strategies.roster import ClientRoster
from fedkd.strategies.round_plan import RoundPlan
from fedkd.strategies.round_row import round_row
from fedkd.strategies.sampling import (
    EVALUATE_TAG,
)
from fedkd.strategies.validation import (
    EVALUATE_RULES,
    TRAIN_RULES,
    record_arrays,
)
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid

from fedkd import keys
from fedkd.config import FedkdConfig
from fedkd.errors import RunFailed
from fedkd.privacy.accounting import PrivacyPlan
from fedkd.uploads import ServerRound, UploadChain, server_chain, upload_encoding

log = logging.getLogger("fedkd")

RoundCallback = Callable[[dict[str, Any]], None]


class KDStrategy(ClientRoster):
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

    def __init__(self, cfg: FedkdConfig, num_proxy: int, num_classes: int) -> None:
        super().__init__(cfg, num_proxy, num_classes)
        self.latest_accuracy: dict[int, float] = {}
        self.global_weights: ArrayRecord | None = None
        self.warm_weights: ArrayRecord | None = None
        self.warm_started: set[int] = set()  # partitions that received warm_weights
        self.target_rows: np.ndarray | None = None  # pate: the only rows targets may use
        self.knowledge: np.ndarray | None = None  # teacher features / maps per proxy row
        self.privacy_snr: list[float] = []  # client_dp: SNR of each round's consensus
        self.uploads: UploadChain = self._server_uploads()

    # ------------------------------------------------------ hooks subclasses override
    def summary(self) -> None:
        """Log one line about the strategy; called once at the start of :meth:`start`."""
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

        Called by :meth:`configure_train` each round. ``proxy_idx`` are the rows sampled
        this round; a strategy may send targets on other rows (e.g. last round's
        consensus), or none: ``(rows[:0], logits of shape (0, C))`` means clients train
        on private data only. Every strategy must override it.
        """
        raise NotImplementedError

    def reply_rows(self, server_round: int, proxy_idx: np.ndarray) -> np.ndarray:
        """Proxy rows clients reply with logits on (default: this round's proxy rows).

        Called by :meth:`configure_train` after :meth:`round_targets`; return ``proxy_idx[:0]``
        for no uploads.
        """
        return proxy_idx

    def fuse_client_logits(
        self, server_round: int, proxy_idx: np.ndarray, logits: np.ndarray, weights: np.ndarray
    ) -> None:
        """Use the clients' proxy logits (default: ignore them).

        Called by :meth:`aggregate_train` once per round with at least one valid reply.
        ``proxy_idx`` are the reply rows, ``logits`` ``(K, P, C)`` what the server half of
        the upload chain released (client_dp: one noisy mean, ``K = 1``), ``weights``
        their fusion weights (data sizes, or ones under client_dp). A subclass updates its
        own state (e.g. next round's consensus) here.
        """

    def fuse_client_weights(
        self, server_round: int, records: list[ArrayRecord], weights: np.ndarray
    ) -> None:
        """Use the clients' student weights (only when ``collects_weights``).

        Called by :meth:`aggregate_train` before :meth:`fuse_client_logits`; ``weights``
        are the clients' data sizes.
        """

    def train_config(self, server_round: int) -> ConfigRecord:
        """Per-round hyperparameters sent to clients (a subclass may add or change keys).

        Called by :meth:`configure_train`; DP parameters and ``send-weights`` are added
        after it.
        """
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

    def release_uploads(
        self, server_round: int, logits: np.ndarray, weights: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The uploads the fusion may see, and their weights: the chain's server half.

        Called by :meth:`aggregate_train` with the decoded ``(K, P, C)`` uploads. Without
        client_dp both come back unchanged; central client_dp releases one ``(1, P, C)``
        noisy mean of the clipped uploads, local client_dp the clients' own noisy uploads
        (weights all 1). The round's SNR goes into the plan and ``privacy_snr``.
        """
        rnd = ServerRound(self.cfg.seed, server_round, len(self.node_of))
        out = self.uploads.release(logits, weights, rnd)
        if out.snr is not None:
            self.plan.snr = out.snr
            self.privacy_snr.append(out.snr)
        return out.logits, out.weights

    # ------------------------------------------------------------------- set-up
    def set_warm_start(self, weights: ArrayRecord) -> None:
        """Ship ``weights`` as the initial student (see :mod:`fedkd.strategies.warm_start`).

        Called by the server before round 1; subclasses with their own model (fedavg,
        centralized_kd) override it to start from ``weights`` instead.
        """
        self.warm_weights = weights

    def set_privacy(self, plan: PrivacyPlan, target_rows: np.ndarray | None = None) -> None:
        """Make the run private (see :mod:`fedkd.privacy`).

        Clients get the DP parameters with each instruction, client_dp uploads pass the
        server half of the upload chain before fusion, each round row carries its
        epsilon; ``target_rows`` (PATE) are the only proxy rows soft targets may be sent on.
        """
        self.privacy = plan
        self.target_rows = target_rows
        self.uploads = self._server_uploads()

    def _server_uploads(self) -> UploadChain:
        """The server half of the upload chain for this run's compression and privacy."""
        comp = self.cfg.compression
        encoding = upload_encoding(
            comp.soft_labels, comp.uplink, self.cfg.distill.temperature, comp.topk
        )
        return server_chain(self.privacy, encoding)

    def set_knowledge(self, knowledge: np.ndarray) -> None:
        """Send ``knowledge[rows]`` with the soft targets of every instruction.

        ``knowledge`` holds teacher features or attention maps, one entry per proxy row
        (hint, rkd, attention).
        """
        self.knowledge = knowledge

    def weight_shapes(self) -> dict[str, tuple[int, ...]] | None:
        """Array shapes a weights reply must have (those of ``global_weights``)."""
        if not self.collects_weights or self.global_weights is None:
            return None
        return {k: tuple(v.shape) for k, v in self.global_weights.items()}

    # ----------------------------------------------------------------- checkpoint
    def checkpoint_state(self) -> dict[str, Any]:
        """What a resumed run needs to continue exactly (see :mod:`fedkd.checkpoint`).

        Called after each round; subclasses add attributes through ``checkpoint_attrs``.
        """
        return strategy_state(self, self.checkpoint_attrs)

    def load_checkpoint_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`checkpoint_state` (called before a resumed run's first round)."""
        restore_strategy_state(self, self.checkpoint_attrs, state)

    # --------------------------------------------------------------- Flower hooks
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """The round's train instructions; creates the round's :class:`RoundPlan`.

        Called once per round by :meth:`start`. Samples the proxy rows, asks
        :meth:`round_targets` and :meth:`reply_rows`, keeps PATE's rows only, encodes the
        targets, adds :meth:`train_config`, DP parameters and the global / warm-start
        weights, and samples the clients (:meth:`train_partitions`). Subclasses change
        the hooks, not this method.
        """
        plan = self.plan = RoundPlan(server_round)
        plan.proxy_idx = self.proxy_subset(server_round)
        target_idx, targets = self.round_targets(server_round, plan.proxy_idx)
        if self.target_rows is not None:  # PATE: labels exist on the queried rows only
            keep = np.isin(target_idx, self.target_rows)
            target_idx, targets = target_idx[keep], targets[keep]
        plan.target_idx = target_idx
        plan.reply_idx = np.ascontiguousarray(
            self.reply_rows(server_round, plan.proxy_idx), np.int64
        )
        encoded = target_arrays(
            target_idx,
            targets,
            plan.reply_idx,
            knowledge=self.knowledge,
            compression=self.cfg.compression,
            temperature=self.cfg.distill.temperature,
        )
        conf = plan.config = self.train_config(server_round)
        conf[keys.SEND_WEIGHTS] = self.collects_weights
        add_dp_config(conf, self.privacy)
        record = RecordDict({keys.TARGETS: ArrayRecord(encoded), keys.CONFIG: conf})
        if self.global_weights is not None:
            record[keys.WEIGHTS] = self.global_weights
        plan.partitions = self.train_partitions(server_round)
        return self._instructions(record, plan.partitions, MessageType.TRAIN, server_round)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Check the train replies and fuse them; consumes the round's plan.

        Called once per round by :meth:`start` with the replies the device simulation
        kept. Valid replies (:func:`~fedkd.strategies.validation.accept_replies`) give
        metrics, accuracies, weights (:meth:`fuse_client_weights`) and logits, which pass
        :meth:`release_uploads` before :meth:`fuse_client_logits`.
        """
        plan = self.plan
        if plan.server_round != server_round:
            raise KeyError(f"round {server_round} was not configured (plan: {plan.server_round})")
        reply_idx = plan.reply_idx
        plan.evaluated = []
        good = self._accepted(
            replies,
            rules=TRAIN_RULES,
            logits_shape=(len(reply_idx), self.num_classes),
            weight_shapes=self.weight_shapes(),
            same_size=True,
        )
        plan.train_metrics = []
        if not good:
            return None, None
        logits, weights, records = self._read_train_replies(plan, good)
        if sum(weights) <= 0:  # every client reported 0 private samples: weigh them equally
            weights = [1.0] * len(weights)
        if self.collects_weights:
            self.fuse_client_weights(server_round, records, np.asarray(weights))
        logits, w = self.release_uploads(server_round, logits, np.asarray(weights))
        self.fuse_client_logits(server_round, reply_idx, logits, w)
        return None, MetricRecord(
            {k: float(np.mean([t[k] for t in plan.train_metrics])) for k in (keys.TRAIN_LOSS,)}
        )

    def _read_train_replies(
        self, plan: RoundPlan, good: list[tuple[int, Message]]
    ) -> tuple[np.ndarray, list[float], list[ArrayRecord]]:
        """``(logits (K, P, C), data sizes, weight records)`` of the valid train replies.

        One (K, P, C) array; each reply's own copy is dropped once moved into it, so a
        round of K clients holds its logits once (10,000 clients x 4,000 rows x 10 classes
        = 1.6 GB, not twice that). Records metrics, accuracies and warm-started clients.
        """
        logits = np.empty((len(good), len(plan.reply_idx), self.num_classes), np.float32)
        weights, records = [], []
        for k, (pid, msg) in enumerate(good):
            self.warm_started.add(pid)
            m = msg.content.metric_records[keys.METRICS]
            plan.train_metrics.append(
                {k: float(v) for k, v in m.items() if isinstance(v, int | float)}
            )  # type: ignore[misc]
            arrays = record_arrays(msg.content.array_records[keys.REPLY_LOGITS])
            logits[k] = self.uploads.decode(arrays, self.num_classes)
            del msg.content[keys.REPLY_LOGITS], arrays
            weights.append(float(m[keys.NUM_EXAMPLES]))  # type: ignore[arg-type]
            if self.collects_weights:
                records.append(msg.content.array_records[keys.WEIGHTS])
            if not self.train_accuracy_counts:
                continue
            if keys.TEST_ACCURACY in m:  # range-checked in _accepted
                self.latest_accuracy[pid] = float(m[keys.TEST_ACCURACY])  # type: ignore[arg-type]
                plan.evaluated.append(pid)
        return logits, weights, records

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Evaluate instructions: every ``evaluate.every`` rounds and in the last round.

        Called by :meth:`start` after :meth:`aggregate_train`. Samples
        ``evaluate.fraction`` of the clients (all in the last round), less those whose
        accuracy this round's training already reported.
        """
        ev = self.cfg.evaluate
        last = server_round == self.cfg.rounds
        if not last and server_round % ev.every != 0:
            return []
        fraction = 1.0 if last else ev.fraction
        trained = set(self.plan.evaluated)
        parts = [
            p
            for p in self.sample_partitions(server_round, fraction, tag=EVALUATE_TAG)
            if p not in trained
        ]
        record = RecordDict({keys.CONFIG: ConfigRecord({keys.SERVER_ROUND: server_round})})
        if self.global_weights is not None:
            record[keys.WEIGHTS] = self.global_weights
        return self._instructions(record, parts, MessageType.EVALUATE, server_round)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Record the valid evaluate replies' test accuracies; their mean (None: none).

        Called by :meth:`start` after :meth:`configure_evaluate`'s exchange.
        """
        good = self._accepted(replies, rules=EVALUATE_RULES)
        for pid, msg in good:
            self.warm_started.add(pid)
            self.latest_accuracy[pid] = float(
                msg.content.metric_records[keys.METRICS][keys.TEST_ACCURACY]
            )  # type: ignore[arg-type]
            self.plan.evaluated.append(pid)
        accs = [self.latest_accuracy[p] for p in self.plan.evaluated]
        if not accs:
            return None
        return MetricRecord({"accuracy-mean": float(np.mean(accs))})

    def _instructions(
        self, record: RecordDict, partitions: list[int], kind: str, server_round: int
    ) -> list[Message]:
        """One message per partition, with the warm-start student where it is still due."""
        return instructions(
            record,
            [(p, self.node_of[p]) for p in partitions],
            kind,
            server_round,
            warm_weights=self.warm_weights,
            warm_started=self.warm_started,
        )

    # ------------------------------------------------------------------- template
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
        ``start_round > 1`` continues a resumed run. Runs :meth:`discover` first when no
        client is known yet. A subclass that trains without clients (centralized_kd)
        overrides the whole loop.
        """
        timeout = self.cfg.strategy.round_timeout_s if timeout is None else timeout
        self.summary()
        if not self.node_of:
            self.discover(grid, timeout)
        rows = []
        t_start = time.perf_counter()
        checked = valid_total = 0  # rounds whose train replies were checked; valid replies
        for rnd in range(start_round, num_rounds + 1):
            t0 = time.perf_counter()
            down0, up0 = self.traffic.total_down, self.traffic.total_up
            sampled, train_ok, asked = self._train_phase(grid, rnd, timeout)
            if asked:
                checked += 1
                valid_total += train_ok
                self._require_valid(rnd, f"round {rnd} train", train_ok, asked)
            # evaluate replies are checked one by one, not counted: a client still busy
            # with a late train call cannot answer its round's evaluate either
            eval_msgs = list(self.configure_evaluate(rnd, ArrayRecord(), ConfigRecord(), grid))
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

    def _train_phase(self, grid: Grid, rnd: int, timeout: float | None) -> tuple[int, int, int]:
        """One round's train exchange: ``(sampled, valid replies, replies validation counts)``."""
        train_msgs = list(self.configure_train(rnd, ArrayRecord(), ConfigRecord(), grid))
        replies = self._exchange(grid, train_msgs, "train", timeout)
        replies = self.apply_devices(rnd, train_msgs, replies)
        self.aggregate_train(rnd, replies)
        return len(train_msgs), len(self.plan.train_metrics), self._train_asked(rnd, train_msgs)

    def _round_row(
        self, rnd: int, sampled: int, ok: int, t0: float, t_start: float, down0: int, up0: int
    ) -> dict[str, Any]:
        """The round's metrics row (see :func:`fedkd.strategies.round_row.round_row`)."""
        accs = [self.latest_accuracy[p] for p in self.plan.evaluated]
        now = time.perf_counter()
        row = round_row(
            self.plan,
            server_round=rnd,
            sampled=sampled,
            ok=ok,
            rejections=self.rejection_log.pending,
            accuracies=accs,
            bytes_down=self.traffic.total_down - down0,
            bytes_up=self.traffic.total_up - up0,
            round_time_s=now - t0,
            wall_time_s=now - t_start,
            epsilon=self.privacy.epsilon_after(rnd) if self.privacy is not None else None,
        )
        self._flush_rejections(rnd)
        return row
