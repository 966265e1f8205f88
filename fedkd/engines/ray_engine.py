"""Ray engine: the in-process Grid's bookkeeping, with ClientApp calls in Ray actors.

The server side (strategy, Grid API, node Contexts, state store, checkpoints) is the
in-process engine's. Each message is sent, with its node's Context, to an actor of the
node's device tier pool (one pool per ``devices.tiers`` entry, each actor reserving the
tier's ``cpus`` and ``memory_mb`` as Ray resources; without tiers one pool). The actor
runs the ClientApp and returns the reply and the node's new state. Actors load the app by reference
(``fedkd.client_app:app``), so the same installed code runs on every Ray node.

``ray.address`` joins an existing cluster (``ray start --head``); otherwise a local Ray
instance is started for the run and shut down by :meth:`RayGrid.close` (also after
Ctrl-C: :func:`fedkd.run` closes the grid in a ``finally``).
"""

from __future__ import annotations

import importlib
import logging
import math
import os
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any
from uuid import uuid4

from flwr.app import Context, Error, Message
from flwr.common.constant import ErrorCode

from fedkd.engines.inprocess import NODE_ID_OFFSET, InProcessGrid
from fedkd.errors import ConfigError
from fedkd.state_store import ClientStateStore

log = logging.getLogger("fedkd")

APP_REF = "fedkd.client_app:app"

ACTOR_START_S = 300.0
"""Seconds to wait for a (replacement) actor to start before giving up on its queue."""


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast (one line) when nothing listens at a ``host:port`` Ray address.

    ``ray.init`` itself keeps retrying for minutes. Other forms (``auto``, ``ray://``)
    are left to Ray.
    """
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "/" in host:
        return
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as err:
        raise ConfigError(
            f"ray.address={address!r}: no Ray cluster answers there ({err.strerror or err}); "
            "start one with `ray start --head --port PORT` or leave ray.address unset"
        ) from None


class ClientActor:
    """Runs one ClientApp call at a time (wrapped by ``ray.remote`` in :class:`RayGrid`)."""

    def __init__(self, app_ref: str, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        module, _, attr = app_ref.partition(":")
        self._app = getattr(importlib.import_module(module), attr)

    def ready(self) -> bool:
        """True once the actor is constructed (the engine waits for it before sending)."""
        return True

    def run(self, msg: Message, context: Context) -> tuple[Message | None, Any, str | None]:
        """``(reply, new node state, None)``, or ``(None, None, reason)`` if the app raised."""
        from flwr.supercore.task_identity import TaskIdentity

        TaskIdentity.run_id = context.run_id
        TaskIdentity.node_id = context.node_id
        TaskIdentity.task_id = context.node_id
        try:
            reply = self._app(msg, context)
        except Exception as err:  # noqa: BLE001 - the node's error reply
            return None, None, f"{type(err).__name__}: {err}"
        return reply, context.state, None


@dataclass
class _Call:
    """A ClientApp call in flight on an actor."""

    pool: int
    actor: Any
    msg: Message
    ctx: Context
    before: bytes | None
    deadline: float  # monotonic; inf without a timeout


@dataclass
class _PoolSpec:
    """What one tier's actor pool asks of the Ray cluster (before actors exist)."""

    name: str
    cpus: float
    memory: float  # bytes per actor
    actors: int
    explicit: bool  # ``actors`` set by the user (too much is then a config error)


@dataclass
class _Pool:
    """The actors of one device tier and what each reserves."""

    name: str
    cpus: float
    memory: int  # bytes
    actors: list[Any]


class RayGrid(InProcessGrid):
    """Grid whose ClientApp calls run in Ray actors, one actor pool per device tier.

    Parameters
    ----------
    cfg : FedkdConfig
        Gives ``ray.address`` / ``ray.num_cpus``, ``devices.tiers`` (pools and their
        ``cpus`` / ``actors``) and ``threads`` (torch threads per actor).
    num_nodes, run_config, run_id, state_store
        As for :class:`InProcessGrid`.
    app_ref : str
        ``module:attribute`` of the ClientApp, imported by every actor.

    """

    def __init__(
        self,
        cfg: Any,
        num_nodes: int,
        run_config: dict[str, Any],
        *,
        run_id: int = 1,
        state_store: ClientStateStore | None = None,
        app_ref: str = APP_REF,
    ) -> None:
        import ray

        module, _, attr = app_ref.partition(":")
        local_app = getattr(importlib.import_module(module), attr)
        super().__init__(local_app, num_nodes, run_config, run_id=run_id, state_store=state_store)
        self._cfg = cfg
        self._app_ref = app_ref
        env = {"OMP_NUM_THREADS": str(cfg.threads), "MKL_NUM_THREADS": str(cfg.threads)}
        if os.environ.get("FEDKD_CACHE"):
            env["FEDKD_CACHE"] = os.environ["FEDKD_CACHE"]
        self._owns_ray = False
        os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # no GPUs wanted
        if not ray.is_initialized():
            address = cfg.ray.address
            kwargs: dict[str, Any] = {
                "include_dashboard": False,
                "log_to_driver": False,
                "runtime_env": {"env_vars": env},
            }
            if address:
                _check_reachable(address)
                log.info("joining the Ray cluster at %s", address)
                try:
                    ray.init(address=address, **kwargs)
                except (ConnectionError, RuntimeError) as err:
                    raise ConfigError(
                        f"ray.address={address!r}: cannot join a Ray cluster there ({err})"
                    ) from None
            else:
                num_cpus = cfg.ray.num_cpus or len(os.sched_getaffinity(0))
                log.info("starting a local Ray instance with %d CPUs", num_cpus)
                ray.init(num_cpus=num_cpus, **kwargs)
            self._owns_ray = True
        self._actor_cls = ray.remote(ClientActor)
        resources = ray.cluster_resources()
        self._pools = self._make_pools(
            float(resources.get("CPU", 1)), float(resources.get("memory", 0))
        )
        # deadlines count from a call's dispatch: start every actor before the first one
        pings = [a.ready.remote() for p in self._pools for a in p.actors]
        ray.wait(pings, num_returns=len(pings), timeout=ACTOR_START_S)

    # -- pools ----------------------------------------------------------------------
    def _make_pools(self, total_cpus: float, total_memory: float) -> list[_Pool]:
        """One pool per tier, each actor reserving the tier's ``cpus`` and ``memory_mb``.

        Pools have ``actors`` actors, or a share of the CPUs. When the automatic sizes ask
        for more than the cluster has, reservations shrink proportionally (a warning);
        with explicit ``actors`` that is a config error.
        """
        tiers = self._cfg.devices.tiers
        specs: list[_PoolSpec] = []
        if not tiers:
            specs.append(_PoolSpec("default", 1.0, 0.0, max(1, int(total_cpus)), False))
        else:
            share = sum(t.share for t in tiers)
            for t in tiers:
                auto = max(1, int(total_cpus * t.share / share / t.cpus))
                specs.append(
                    _PoolSpec(t.name, t.cpus, t.memory_mb * 2**20, t.actors or auto, bool(t.actors))
                )
        explicit = any(spec.explicit for spec in specs)
        for what, field, total in (
            ("CPUs", "cpus", total_cpus),
            ("bytes of memory", "memory", total_memory),
        ):
            need = sum(getattr(spec, field) * spec.actors for spec in specs)
            if need <= total + 1e-9:
                continue
            if explicit:
                raise ConfigError(
                    f"engine 'ray': devices.tiers ask for {need:g} {what} (actors x "
                    f"reservation), the Ray cluster has {total:g}; lower devices.tiers[].actors, "
                    "cpus or memory_mb, or give Ray more (ray.num_cpus)"
                )
            scale = total / need
            log.warning(
                "ray: tiers ask for %.3g %s, the cluster has %.3g; each actor reserves %.0f%% "
                "of its tier's figure",
                need,
                what,
                total,
                100 * scale,
            )
            specs = [replace(spec, **{field: getattr(spec, field) * scale}) for spec in specs]
        pools = []
        for spec in specs:
            pool = _Pool(spec.name, spec.cpus, int(spec.memory), [])
            pool.actors = [self._new_actor(pool) for _ in range(spec.actors)]
            pools.append(pool)
            log.info(
                "ray pool %s: %d actor(s), %.2f CPU and %.0f MB each",
                spec.name,
                spec.actors,
                spec.cpus,
                spec.memory / 2**20,
            )
        return pools

    def _new_actor(self, pool: _Pool) -> Any:
        options: dict[str, Any] = {"num_cpus": pool.cpus}
        if pool.memory:
            options["memory"] = pool.memory
        return self._actor_cls.options(**options).remote(self._app_ref, self._cfg.threads)

    def _pool_of(self, node_id: int) -> int:
        index = self._cfg.tier_index(node_id - NODE_ID_OFFSET)
        return 0 if index is None else int(index)

    # -- Grid API -------------------------------------------------------------------
    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Run each message on an idle actor of its node's pool.

        Every call has a deadline of its own, ``timeout`` seconds after its dispatch to an
        actor, so messages queued behind a slow client are not penalised. A call past its
        deadline counts as no reply: its actor is killed (the node's state is not
        updated) and a replacement takes further messages once it has started.
        """
        import ray

        msgs = [self._pending.pop(mid) for mid in list(self.push_messages(messages))]
        calls = _Calls(self, msgs, timeout)
        calls.dispatch()
        while calls.busy():
            for ref in calls.wait(ray):
                if ref in calls.warming:
                    calls.warmed(ray, ref)
                else:
                    calls.finished(ray, ref)
            calls.expire()
            calls.dispatch()
        if calls.late:
            log.info(
                "%d client(s) did not answer within %s s of their dispatch", calls.late, timeout
            )
        return [
            calls.replies[m.metadata.message_id]
            for m in msgs
            if m.metadata.message_id in calls.replies
        ]

    def _replace(self, pool: int, actor: Any) -> Any:
        import ray

        ray.kill(actor, no_restart=True)
        p = self._pools[pool]
        new = self._new_actor(p)
        p.actors[p.actors.index(actor)] = new
        return new

    def close(self) -> None:
        """Kill the actors; shut Ray down (a local instance stops, a cluster is left)."""
        import ray

        if not ray.is_initialized():
            return
        for p in self._pools:
            for a in p.actors:
                ray.kill(a, no_restart=True)
        self._pools = []
        if self._owns_ray:
            ray.shutdown()


class _Calls:
    """The calls of one :meth:`RayGrid.send_and_receive`: queued, running, warming actors.

    Each pool has a queue of messages (taken in order) and its idle actors; a running
    call holds an actor until it answers or passes its deadline; a killed actor's
    replacement is *warming* until its ``ready()`` answers (or ``ACTOR_START_S`` passes).
    """

    def __init__(self, grid: RayGrid, msgs: list[Message], timeout: float | None) -> None:
        self.grid = grid
        self.timeout = timeout
        self.queues: list[list[Message]] = [[] for _ in grid._pools]
        for m in msgs:
            self.queues[grid._pool_of(m.metadata.dst_node_id)].append(m)
        for q in self.queues:
            q.reverse()  # pop() takes them in order
        self.idle = [list(p.actors) for p in grid._pools]
        self.running: dict[Any, _Call] = {}
        self.warming: dict[Any, tuple[int, Any, float]] = {}  # ready() ref -> pool, actor, give up
        self.replies: dict[str, Message] = {}
        self.late = 0

    def busy(self) -> bool:
        """Whether calls are running, or queued messages wait for a warming actor."""
        return bool(self.running or (self.warming and any(self.queues)))

    def dispatch(self) -> None:
        """Start queued messages on the idle actors of their pools."""
        grid = self.grid
        for i, q in enumerate(self.queues):
            while q and self.idle[i]:
                msg = q.pop()
                actor = self.idle[i].pop()
                ctx = grid.context(msg.metadata.dst_node_id)
                before = grid.fingerprint(ctx) if grid.state_store is not None else None
                deadline = math.inf if self.timeout is None else time.monotonic() + self.timeout
                ref = actor.run.remote(msg, ctx)
                self.running[ref] = _Call(i, actor, msg, ctx, before, deadline)

    def restart(self, pool: int, actor: Any) -> None:
        """Kill ``actor`` and start its replacement (warming until ready)."""
        new = self.grid._replace(pool, actor)
        self.warming[new.ready.remote()] = (pool, new, time.monotonic() + ACTOR_START_S)

    def wait(self, ray: Any) -> list[Any]:
        """The next finished refs (running calls or warming actors), up to a deadline."""
        ends = [c.deadline for c in self.running.values()] + [w[2] for w in self.warming.values()]
        left = max(0.0, min(ends) - time.monotonic())
        done, _ = ray.wait(
            [*self.running, *self.warming],
            num_returns=1,
            timeout=None if math.isinf(left) else left,
        )
        return list(done)

    def warmed(self, ray: Any, ref: Any) -> None:
        """A replacement actor answered ``ready()``: idle, or restarted when it failed."""
        pool, actor, _ = self.warming.pop(ref)
        try:
            ray.get(ref)
            self.idle[pool].append(actor)
        except ray.exceptions.RayError as err:
            log.warning("ray: a replacement actor failed to start (%s)", err)
            self.restart(pool, actor)

    def finished(self, ray: Any, ref: Any) -> None:
        """A call answered: keep its reply (an error reply when it raised or its actor died)."""
        call = self.running.pop(ref)
        try:
            reply, state, reason = ray.get(ref)
        except ray.exceptions.RayError as err:  # actor died: replace it
            reply, state, reason = None, None, f"{type(err).__name__}: {err}"
            self.restart(call.pool, call.actor)
        else:
            self.idle[call.pool].append(call.actor)
        msg = call.msg
        if reply is None:
            log.debug("client %s raised: %s", msg.metadata.dst_node_id, reason)
            reply = Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, str(reason)), reply_to=msg)
        else:
            call.ctx.state = state
            self.grid.release(msg, call.ctx, call.before)
        reply.metadata.__dict__["_message_id"] = uuid4().hex
        self.replies[msg.metadata.message_id] = reply

    def expire(self) -> None:
        """Give up late calls, replacement actors that never start, stranded queues.

        A late call's actor is restarted; the queue of a pool left without any actor
        (idle, running or warming) cannot answer and counts as late.
        """
        now = time.monotonic()
        for ref in [r for r, c in self.running.items() if c.deadline <= now]:
            call = self.running.pop(ref)
            self.late += 1
            self.restart(call.pool, call.actor)  # still busy with a late call
        for ref in [r for r, w in self.warming.items() if w[2] <= now]:
            self.warming.pop(ref)
            log.warning("ray: a replacement actor did not start in %.0f s", ACTOR_START_S)
        for i, q in enumerate(self.queues):  # a pool left without actors cannot answer
            if q and not self.idle[i] and not any(c.pool == i for c in self.running.values()):
                if not any(w[0] == i for w in self.warming.values()):
                    self.late += len(q)
                    q.clear()
