"""Privacy accounting with established libraries; no hand-written epsilon.

Every mechanism here is a (sub)sampled Gaussian mechanism composed ``steps`` times:

* ``client_dp``: per round, each client is in the round with rate ``q`` = sampled / all
  clients (Poisson sampling from a cryptographic source; ``q = 1`` in local mode or with
  ``privacy.amplification = false``), and the sum of uploads clipped to sensitivity
  ``S = clip * sqrt(rows)`` gets ``N(0, (noise_multiplier * S)^2)`` (central), or each
  upload ``N(0, (2 * noise_multiplier * S)^2)`` for replace-one sensitivity ``2 S`` (local).
* ``dp_sgd``: per step, each private sample is in the batch with rate ``q`` (Poisson
  sampling), per-sample gradients clipped, Gaussian noise on their sum.
* ``pate``: per query, the teacher vote histogram (L2 sensitivity sqrt(2): one record
  changes one teacher's vote) gets ``N(0, sigma^2)`` per class: a Gaussian mechanism with
  noise multiplier ``sigma / sqrt(2)`` and ``q = 1`` (the data-independent GNMax bound).

The primary accountant is Opacus' RDP accountant (:class:`opacus.accountants.RDPAccountant`);
:func:`epsilon_dp_accounting` recomputes the same epsilon with Google's dp-accounting
(``RdpAccountant`` over ``PoissonSampledDpEvent(q, GaussianDpEvent(sigma))``) so anyone can
check a recorded run.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

ACCOUNTANT = "opacus.accountants.RDPAccountant (opacus 1.6)"
CHECK_ACCOUNTANT = "dp_accounting.rdp.RdpAccountant"

# Opacus logs a warning for every RDP order whose series does not converge at large q
logging.getLogger("opacus").setLevel(logging.ERROR)


def epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
    """Epsilon of ``steps`` compositions of the subsampled Gaussian mechanism (Opacus RDP)."""
    from opacus.accountants import RDPAccountant

    if steps <= 0:
        return 0.0
    acc = RDPAccountant()
    acc.history = [(float(noise_multiplier), float(sample_rate), int(steps))]
    return float(acc.get_epsilon(delta))


def epsilon_dp_accounting(
    noise_multiplier: float, sample_rate: float, steps: int, delta: float
) -> float:
    """The same epsilon from Google's dp-accounting (the second library, for checks)."""
    import dp_accounting
    from dp_accounting.rdp import rdp_privacy_accountant

    acc = rdp_privacy_accountant.RdpAccountant()
    event = dp_accounting.GaussianDpEvent(float(noise_multiplier))
    if sample_rate < 1:
        event = dp_accounting.PoissonSampledDpEvent(float(sample_rate), event)
    acc.compose(event, int(steps))
    return float(acc.get_epsilon(delta))


def noise_for_epsilon(target: float, sample_rate: float, steps: int, delta: float) -> float:
    """Smallest noise multiplier (to 0.01) whose Opacus RDP epsilon is at most ``target``."""
    from opacus.accountants.utils import get_noise_multiplier

    return float(
        get_noise_multiplier(
            target_epsilon=target,
            target_delta=delta,
            sample_rate=sample_rate,
            steps=steps,
            accountant="rdp",
            epsilon_tolerance=0.01,
        )
    )


@dataclass(frozen=True)
class PrivacyPlan:
    """What a private run does and what it costs: everything needed to recompute epsilon.

    ``steps`` compositions of the Gaussian mechanism with ``noise_multiplier`` at
    ``sample_rate`` (Poisson); ``steps_per_round`` of them happen in each round (PATE
    spends all of its ``steps`` before round 1: ``steps_per_round = 0``).
    """

    mechanism: str
    noise_multiplier: float
    sample_rate: float
    steps: int
    steps_per_round: int
    delta: float
    clip: float | None
    target_epsilon: float | None
    local: bool = False
    sigma: float | None = None  # pate: vote noise
    private: bool = True  # False: noise from the public seed (privacy.reproducible_noise)
    noise_source: str = ""
    sizes_from: str = ""  # dp_sgd: where the private data sizes came from

    def epsilon_after(self, server_round: int) -> float:
        """Epsilon spent after ``server_round`` rounds."""
        steps = self.steps if self.steps_per_round == 0 else self.steps_per_round * server_round
        return epsilon(self.noise_multiplier, self.sample_rate, min(steps, self.steps), self.delta)

    def summary(self) -> dict[str, Any]:
        """``summary.json`` ``privacy``: recompute epsilon from these fields."""
        return {
            "mechanism": self.mechanism,
            "epsilon": epsilon(self.noise_multiplier, self.sample_rate, self.steps, self.delta),
            "delta": self.delta,
            "target_epsilon": self.target_epsilon,
            "noise_multiplier": self.noise_multiplier,
            "sample_rate": self.sample_rate,
            "steps": self.steps,
            "clip": self.clip,
            "clip_unit": _CLIP_UNIT.get(self.mechanism),
            "local": self.local if self.mechanism == "client_dp" else None,
            "pate_sigma": self.sigma,
            "accountant": ACCOUNTANT,
            "check_accountant": CHECK_ACCOUNTANT,
            "sampling": _SAMPLING[self.mechanism]
            if self.sample_rate < 1
            else "none counted (q = 1)",
            "private": self.private,
            "noise_source": self.noise_source,
            "threat_model": THREAT_MODELS[self.mechanism + ("_local" if self.local else "")],
            "sizes_from": self.sizes_from or None,
        }


_CLIP_UNIT = {
    "client_dp": "L2 norm of each centred proxy row of an upload (upload: clip * sqrt(rows))",
    "dp_sgd": "L2 norm of each per-sample gradient",
}
_SAMPLING = {
    "client_dp": "Poisson client sampling at rate q, drawn from the noise source",
    "dp_sgd": "Poisson sampling of private samples at rate q, on the device, noise source",
    "pate": "none",
}
THREAT_MODELS = {
    "client_dp": "central DP, client level: trusted server; the adversary sees every "
    "consensus the server releases (other clients, the analyst), not the sampling",
    "client_dp_local": "local DP, client level: the adversary is the server (and all who "
    "see uploads); each client noises its own upload with parameters it holds itself",
    "dp_sgd": "sample level: the adversary sees everything a client sends and its final "
    "student (the server, other clients); not the device's own randomness",
    "pate": "record level, teacher split: the adversary sees the GNMax labels and all "
    "that is trained from them; the teachers stay on the trusted server",
}


def planned_noise(privacy: Any, sample_rate: float, steps: int) -> float:
    """The noise multiplier of a ``privacy`` config section for ``steps`` at ``sample_rate``.

    Solved for ``privacy.epsilon`` when a target is set, else ``privacy.noise_multiplier``.
    """
    if privacy.epsilon is not None:
        return noise_for_epsilon(privacy.epsilon, sample_rate, steps, privacy.delta)
    assert privacy.noise_multiplier is not None  # the config validator ensures one of the two
    return float(privacy.noise_multiplier)


def plan_privacy(
    cfg: Any, private_sizes: list[int], teacher_split: int, sizes_from: str = "simulated partitions"
) -> PrivacyPlan | None:
    """The run's :class:`PrivacyPlan` (None without ``privacy.mode``).

    dp_sgd plans for the client whose data pays most among ``private_sizes``; the server
    plans again from the sizes the clients report at discovery (``sizes_from``), since a
    deployed device's own data need not match the simulated partitions.

    Raises ``ValueError`` (one line, what is allowed) for a delta not below 1/N, N being
    the records one unit of privacy protects: clients (client_dp), samples of the
    smallest client (dp_sgd), samples of the teacher split (pate).
    """
    p = cfg.privacy
    if p.mode is None:
        return None
    from fedkd.privacy.noise import SECURE, SEEDED

    source: dict[str, Any] = {
        "private": not p.reproducible_noise,
        "noise_source": SEEDED if p.reproducible_noise else SECURE,
    }

    def check_delta(n: int, what: str) -> None:
        if n <= 0 or p.delta >= 1.0 / n:
            raise ValueError(
                f"privacy.delta={p.delta:g} must be below 1/N = 1/{n} ({what}); "
                "typical: delta < 1/(10 N)"
            )

    if p.mode == "client_dp":
        n = cfg.num_clients
        check_delta(n, "clients")
        q = 1.0 if p.local or not p.amplification else client_sample_rate(cfg)
        z = planned_noise(p, q, cfg.rounds)
        return PrivacyPlan(
            "client_dp", z, q, cfg.rounds, 1, p.delta, p.clip, p.epsilon, p.local, **source
        )
    if p.mode == "pate":
        check_delta(teacher_split, "samples of the teacher split")
        z = planned_noise(p, 1.0, p.queries)
        sigma = z * math.sqrt(2)
        return PrivacyPlan(
            "pate", z, 1.0, p.queries, 0, p.delta, None, p.epsilon, sigma=sigma, **source
        )
    # dp_sgd: the client whose data pays most (largest epsilon at a reference noise)
    from fedkd.privacy.dp_sgd import private_steps_per_epoch, sample_rate

    sizes = sorted({s for s in private_sizes if s > 0})
    if not sizes:
        raise ValueError("privacy.mode='dp_sgd' needs clients with private data")
    check_delta(sizes[0], "samples of the smallest client")
    d = cfg.distill

    def cost(n: int) -> tuple[float, int]:
        per_round = d.local_epochs * private_steps_per_epoch(n, d.batch_size)
        return sample_rate(n, d.batch_size), per_round

    def eps_at_reference(n: int) -> float:
        q, per_round = cost(n)
        return epsilon(1.0, q, per_round * cfg.rounds, p.delta)

    q, per_round = cost(max(sizes, key=eps_at_reference))
    z = planned_noise(p, q, per_round * cfg.rounds)
    return PrivacyPlan(
        "dp_sgd",
        z,
        q,
        per_round * cfg.rounds,
        per_round,
        p.delta,
        p.clip,
        p.epsilon,
        sizes_from=sizes_from,
        **source,
    )


def client_sample_rate(cfg: Any) -> float:
    """Central client_dp's Poisson rate: the configured clients per round over all."""
    n = cfg.num_clients
    k = min(n, max(cfg.strategy.min_clients, int(round(cfg.strategy.fraction * n))))
    return k / n
