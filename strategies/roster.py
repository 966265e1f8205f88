"""The server's view of its clients: who they are, how to reach them, which replies count.

:class:`ClientRoster` is the lower half of :class:`~fedkd.strategies.base.KDStrategy`:
discovery (:mod:`fedkd.strategies.discovery`), one exchange of messages with its traffic
(:mod:`fedkd.strategies.exchange`), the checks on replies and the rejection log
(:mod:`fedkd.strategies.validation`, :mod:`fedkd.strategies.rejections`), client and
proxy-row sampling (:mod:`fedkd.strategies.sampling`), the simulated device tiers of a
round (:mod:`fedkd.strategies.device_rounds`) and the local-only baseline. Nothing here is
a hook a strategy overrides.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import numpy as np
from fedkd.strategies import device_rounds as dr
from fedkd.strategies.baseline import baseline_accuracies, baseline_messages
from fedkd.strategies.discovery import discovery_messages, read_discovery, wait_for_nodes
from fedkd.strategies.exchange import MessageSizes, send_and_measure
from fedkd.strategies.rejections import RejectionLog
from fedkd.strategies.round_plan import RoundPlan
from fedkd.strategies.sampling import (
    TRAIN_TAG,
    poisson_sample,
    proxy_subset,
    sample_count,
    seeded_sample,
)
from fedkd.strategies.validation import BASELINE_RULES, MetricRule, accept_replies
from flwr.app import Message
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedkd.config import FedkdConfig
from fedkd.devices import DeviceFleet
from fedkd.privacy.accounting import PrivacyPlan
from fedkd.privacy.noise import TAG_CLIENT_SAMPLING, noise_source
from fedkd.traffic import Traffic

log = logging.getLogger("fedkd")


class ClientRoster(Strategy):
    """The discovered clients, the wire to them and the bookkeeping of their replies.

    Parameters
    ----------
    cfg : FedkdConfig
        The resolved run configuration.
    num_proxy : int
        Size of the public proxy split.
    num_classes : int
        Number of classes.

    """

    def __init__(self, cfg: FedkdConfig, num_proxy: int, num_classes: int) -> None:
        self.cfg = cfg
        self.num_proxy = num_proxy
        self.num_classes = num_classes
        self.traffic = Traffic()
        self.node_of: dict[int, int] = {}  # partition id -> node id
        self.client_info: dict[int, dict[str, Any]] = {}  # partition id -> size, histogram
        self.rejection_log = RejectionLog()
        self.sizes = MessageSizes()  # bytes of the last exchange's messages
        self.plan = RoundPlan()  # the round in progress (KDStrategy.configure_train)
        self.fleet: DeviceFleet | None = None  # simulated device tiers (set_fleet)
        self.virtual_time = 0.0
        self.tier_stats: dict[str, dict[str, float]] = {}
        self.privacy: PrivacyPlan | None = None

    def set_fleet(self, fleet: DeviceFleet) -> None:
        """Simulate device tiers: availability, failures, virtual clock, round policy."""
        self.fleet = fleet

    @property
    def rejections(self) -> list[dict[str, Any]]:
        """Every rejected reply of the run (``round``, ``partition``, ``kind``, ``reason``)."""
        return self.rejection_log.all

    @rejections.setter
    def rejections(self, value: list[dict[str, Any]]) -> None:
        self.rejection_log.all = value

    # ------------------------------------------------------------------- sampling
    def sample_partitions(
        self, server_round: int, fraction: float, tag: int, online_only: bool = False
    ) -> list[int]:
        """Seeded sample of partition ids (sorted) among the discovered clients.

        ``online_only`` (train sampling with device tiers): ``fraction`` of all clients
        is drawn among those online this round (``over_select``: ``k (1 + x)`` of them);
        the round plan records how many to keep and how many were online.
        """
        pool = sorted(self.node_of)
        k = sample_count(len(pool), fraction, self.cfg.strategy.min_clients)
        if online_only and self.fleet is not None:
            dev = self.cfg.devices
            pool = [p for p in pool if self.fleet.online(p, server_round)]
            self.plan.keep = min(k, len(pool))
            self.plan.devices["available"] = len(pool)
            if dev.policy == "over_select":
                k = int(np.ceil(k * (1 + dev.over_select)))
            k = min(k, len(pool))
        return seeded_sample(pool, k, self.cfg.seed, tag, server_round)

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
            source = noise_source(
                not plan.private, self.cfg.seed, TAG_CLIENT_SAMPLING, server_round
            )
            return poisson_sample(sorted(self.node_of), plan.sample_rate, source)
        return self.sample_partitions(
            server_round, self.cfg.strategy.fraction, tag=TRAIN_TAG, online_only=True
        )

    def proxy_subset(self, server_round: int) -> np.ndarray:
        """Proxy rows used in ``server_round`` (all, or a seeded subset)."""
        s = self.cfg.strategy
        return proxy_subset(self.num_proxy, s.proxy_fraction, self.cfg.seed, server_round)

    def _train_asked(self, server_round: int, sent: list[Message]) -> int:
        """Train replies of ``server_round`` that validation counts (see ``min_valid_fraction``).

        All sampled clients, less those the device simulation accounts for itself:
        replies the round policy dropped as late, clients its ``failure_prob`` crashes
        this round; 0 for a void round (see :func:`fedkd.strategies.device_rounds.train_asked`).
        """
        if self.fleet is None:
            return len(sent)
        part_of = self._part_of()
        return dr.train_asked(
            [part_of.get(m.metadata.dst_node_id, -1) for m in sent],
            self.plan.devices,
            tier_of=self.cfg.tier,
            num_clients=self.cfg.num_clients,
            seed=self.cfg.seed,
            server_round=server_round,
        )

    # ------------------------------------------------------------- other phases
    def discover(self, grid: Grid, timeout: float | None = None) -> None:
        """Ask every node for its partition id, data size and class histogram.

        Called by :meth:`start` before round 1 (see
        :func:`fedkd.strategies.discovery.read_discovery` for the checks). Too few valid
        replies (:meth:`_require_valid`, at least one) stop the run.
        """
        s = self.cfg.strategy
        nodes = wait_for_nodes(grid, self.cfg.num_clients, s.min_clients, s.wait_for_clients_s)
        replies = self._exchange(grid, discovery_messages(nodes), "discover", timeout)
        node_of, client_info = read_discovery(
            replies,
            partition_of=getattr(grid, "partition_of", None),
            num_classes=self.num_classes,
            max_bytes=s.max_reply_bytes,
            reply_bytes=self.sizes.up,
            reject=self._reject,
        )
        self.node_of.update(node_of)
        self.client_info.update(client_info)
        self._require_valid("discover", "discovery", len(self.node_of), len(nodes), floor=True)
        self._flush_rejections("discover")

    def local_only_baseline(
        self, grid: Grid, epochs: int, timeout: float | None = None
    ) -> dict[int, float]:
        """Every client trains a fresh student on private data only; test accuracies.

        Called by the server after the rounds (``baselines.local_only``). Replies are
        checked like the rounds' (an accuracy in [0, 1], the size reported at discovery).
        The baseline fails the run (:class:`RunFailed`) rather than reporting a mean over
        too few clients: fewer valid replies than ``strategy.min_valid_fraction`` of the
        clients, or none at all.
        """
        msgs = baseline_messages(self.node_of, epochs)
        good = self._accepted(
            self._exchange(grid, msgs, "baseline", timeout), rules=BASELINE_RULES, same_size=True
        )
        self._require_valid("baseline", "local-only baseline", len(good), len(msgs), floor=True)
        self._flush_rejections("baseline")
        return baseline_accuracies(good)

    def apply_devices(
        self, server_round: int, sent: list[Message], replies: list[Message]
    ) -> list[Message]:
        """Virtual clock and round policy over this round's train replies (tiers only).

        Called by :meth:`start` between the train exchange and :meth:`aggregate_train`
        (see :mod:`fedkd.strategies.device_rounds`). Counters go into the round plan's
        ``devices`` (the row) and ``tier_stats``; without tiers ``replies`` pass unchanged.
        """
        plan = self.plan
        if self.fleet is None:
            return replies
        dev = self.cfg.devices
        part_of = self._part_of()
        times = dr.reply_times(
            self.fleet,
            replies,
            part_of=part_of,
            down_bytes=self.sizes.down,
            reply_bytes=self.sizes.up,
            client_info=self.client_info,
            n_targets=len(plan.target_idx),
            n_reply=len(plan.reply_idx),
        )
        outcome, void = dr.run_policy(
            dev.policy,
            times,
            deadline_s=dev.deadline_s,
            keep=plan.keep,
            min_replies=dev.min_replies,
            server_round=server_round,
        )
        kept = set(outcome.kept)
        self.virtual_time += outcome.round_time_s
        sampled = [part_of.get(m.metadata.dst_node_id, -1) for m in sent]
        fleet = self.fleet
        dr.tally_tiers(
            self.tier_stats,
            lambda pid: fleet.tiers[fleet.tier_index(pid)].name,
            sampled,
            times,
            kept,
            void,
        )
        available = plan.devices.get("available")
        plan.devices = dr.device_counters(
            available, outcome, void, len(sampled), len(times), self.virtual_time
        )
        plan.keep = None
        return dr.kept_replies(replies, part_of, kept, void)

    # ---------------------------------------------------------- replies and wire
    def _part_of(self) -> dict[int, int]:
        """Node id -> partition id of the discovered clients."""
        return {n: p for p, n in self.node_of.items()}

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
        """Valid replies as ``(partition id, message)`` sorted; the others are rejected.

        See :func:`fedkd.strategies.validation.accept_replies`.
        """
        return accept_replies(
            replies,
            part_of=self._part_of(),
            client_info=self.client_info,
            reply_bytes=self.sizes.up,
            max_bytes=self.cfg.strategy.max_reply_bytes,
            reject=self._reject,
            required=required,
            rules=rules,
            logits_shape=logits_shape,
            weight_shapes=weight_shapes,
            same_size=same_size,
        )

    def _require_valid(
        self, label: int | str, phase: str, valid: int, asked: int, floor: bool = False
    ) -> None:
        """Stop the run when too few replies were valid (``strategy.min_valid_fraction``).

        See :meth:`fedkd.strategies.rejections.RejectionLog.require_valid`.
        """
        frac = self.cfg.strategy.min_valid_fraction
        self.rejection_log.require_valid(label, phase, valid, asked, frac, floor=floor)

    def _reject(self, partition: int, kind: str, reason: str) -> None:
        self.rejection_log.reject(partition, kind, reason)

    def rejections_by_kind(self) -> dict[str, int]:
        """How many replies were rejected, per kind (over the whole run)."""
        return self.rejection_log.by_kind()

    def _flush_rejections(self, label: int | str) -> None:
        """Log one warning per distinct rejection reason and keep them for the summary."""
        self.rejection_log.flush(label)

    def _exchange(
        self, grid: Grid, messages: list[Message], phase: str, timeout: float | None
    ) -> list[Message]:
        """Send ``messages``, count their bytes as ``phase`` traffic; silent nodes rejected."""
        if not messages:
            return []
        replies, self.sizes, silent = send_and_measure(grid, messages, timeout)
        self.traffic.add(phase, sum(self.sizes.down.values()), sum(self.sizes.up.values()))
        part_of = self._part_of()
        for node in silent:
            self._reject(part_of.get(node, -1), "no_reply", "no reply (timeout or node gone)")
        return replies
