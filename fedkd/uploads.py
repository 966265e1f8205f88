"""The upload chain: what a client's proxy logits pass through on their way to the server.

A client's upload (its ``(P, C)`` logits on the round's reply rows) passes through ordered
stages, each a small object with ``apply`` (on the client):

1. :class:`Corrupt` (only a malicious client, ``[attack]``): replace or scale the logits;
2. :class:`Clip` (``privacy.mode = "client_dp"``): centre and clip every row;
3. :class:`LocalNoise` (local client_dp: Gaussian noise on the device) or
   :class:`CentralNoise` (central client_dp: nothing on the device, the server adds it);
4. :class:`Encode` (``compression``): the arrays that travel.

The server runs the inverse in reverse order (:meth:`UploadChain.decode`, then
:meth:`UploadChain.release`): :class:`Encode` decodes, and the noise stage does the
server's half of the mechanism: the central noisy mean of the clipped uploads, or (local)
the signal-to-noise estimate of the already-noised uploads. Stages without a server half
(attack, clip) have no ``invert``.

Each side builds its chain once from its own parameters (:func:`client_chain`,
:func:`server_chain`): the client from the instruction and its own local-DP floor, the
server from its privacy plan. The order of float operations and random draws is that of
the functions the stages call (:mod:`fedkd.attacks`, :mod:`fedkd.privacy.client_dp`,
:mod:`fedkd.compression`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from fedkd.attacks import corrupt_logits
from fedkd.compression import decode, encode
from fedkd.privacy.accounting import PrivacyPlan
from fedkd.privacy.client_dp import clip_upload, local_noise, local_snr, noisy_mean
from fedkd.privacy.noise import TAG_CENTRAL, TAG_LOCAL, noise_source

ATTACK_STREAM = 12
"""Tag of the seeded stream a malicious client's corruption draws from."""


@dataclass(frozen=True)
class Uploader:
    """Who uploads: the run seed, the client's partition id and the round."""

    seed: int
    partition: int
    server_round: int


@dataclass(frozen=True)
class ServerRound:
    """The server's side of one round's uploads.

    Attributes
    ----------
    seed : int
        The run seed (streams of the seeded, non-private noise source).
    server_round : int
        The round.
    clients : int
        Clients discovered (central DP divides by ``sample_rate * clients``).

    """

    seed: int
    server_round: int
    clients: int


@dataclass(frozen=True)
class Release:
    """What the fusion may see: uploads ``(K', P, C)``, their weights, the round's SNR."""

    logits: np.ndarray
    weights: np.ndarray
    snr: float | None = None


class Stage(Protocol):
    """One step of the chain on the client (stages with a server half add ``invert``)."""

    def apply(self, logits: np.ndarray, who: Uploader) -> np.ndarray:
        """The upload after this stage."""
        ...


@dataclass(frozen=True)
class Corrupt:
    """A malicious client's upload (``attack.kind``, ``attack.scale``; see :mod:`fedkd.attacks`)."""

    kind: str
    scale: float

    def apply(self, logits: np.ndarray, who: Uploader) -> np.ndarray:
        """Corrupt ``logits`` with the client's own seeded stream (``label_flip``: unchanged)."""
        rng = np.random.default_rng([who.seed, ATTACK_STREAM, who.partition, who.server_round])
        return corrupt_logits(logits, self.kind, self.scale, rng)


@dataclass(frozen=True)
class Clip:
    """client_dp: centre each row and clip it to L2 norm ``clip`` (an empty upload stays)."""

    clip: float

    def apply(self, logits: np.ndarray, who: Uploader) -> np.ndarray:
        """:func:`fedkd.privacy.client_dp.clip_upload` of a non-empty upload."""
        return clip_upload(logits, self.clip) if len(logits) else logits


@dataclass(frozen=True)
class LocalNoise:
    """Local client_dp: the device adds ``N(0, (2 z S)^2)`` to its clipped upload."""

    clip: float
    noise_multiplier: float
    reproducible: bool

    def apply(self, logits: np.ndarray, who: Uploader) -> np.ndarray:
        """:func:`fedkd.privacy.client_dp.local_noise` of a non-empty upload."""
        if not len(logits):
            return logits
        source = noise_source(
            self.reproducible, who.seed, TAG_LOCAL, who.partition, who.server_round
        )
        return local_noise(logits, self.clip, self.noise_multiplier, source)

    def invert(self, uploads: np.ndarray, weights: np.ndarray, rnd: ServerRound) -> Release:
        """The clients' own noisy uploads, each weighing 1, and the estimated SNR of their mean."""
        snr = local_snr(uploads, self.clip, self.noise_multiplier)
        return Release(uploads, np.ones(len(uploads)), snr)


@dataclass(frozen=True)
class CentralNoise:
    """Central client_dp: nothing on the device; the server releases a noisy mean."""

    clip: float
    noise_multiplier: float
    reproducible: bool
    sample_rate: float

    def apply(self, logits: np.ndarray, who: Uploader) -> np.ndarray:
        """Unchanged: the trusted server adds the noise."""
        return logits

    def invert(self, uploads: np.ndarray, weights: np.ndarray, rnd: ServerRound) -> Release:
        """One ``(1, P, C)`` noisy mean of the (re-)clipped uploads, over the expected count."""
        source = noise_source(self.reproducible, rnd.seed, TAG_CENTRAL, rnd.server_round)
        expected = self.sample_rate * rnd.clients
        release, snr = noisy_mean(uploads, self.clip, self.noise_multiplier, source, expected)
        return Release(release, np.ones(1), snr)


@dataclass(frozen=True)
class Encode:
    """The arrays that carry an upload (``compression.soft_labels`` when ``uplink``)."""

    kind: str = "fp32"
    temperature: float = 1.0
    topk: int = 1

    def apply(self, logits: np.ndarray, who: Uploader) -> dict[str, np.ndarray]:
        """:func:`fedkd.compression.encode` of the upload."""
        return encode(logits, self.kind, temperature=self.temperature, k=self.topk)

    def invert(self, arrays: Mapping[str, np.ndarray], num_classes: int) -> np.ndarray:
        """The ``(P, C)`` float32 logits of any encoding (:func:`fedkd.compression.decode`)."""
        return decode(arrays, num_classes)


@dataclass(frozen=True)
class UploadChain:
    """Ordered logit stages, then the encoding; one chain per side (client or server).

    Attributes
    ----------
    stages : tuple of Stage
        Applied in order on the client (attack, clip, noise); those with ``invert`` are
        inverted in reverse order on the server.
    encoding : Encode
        The last stage: logits to arrays on the client, arrays to logits on the server.

    """

    stages: tuple[Stage, ...] = ()
    encoding: Encode = Encode()

    def apply(self, logits: np.ndarray, who: Uploader) -> dict[str, np.ndarray]:
        """Client: every stage in order, then the encoding; the arrays to send."""
        for stage in self.stages:
            logits = stage.apply(logits, who)
        return self.encoding.apply(logits, who)

    def decode(self, arrays: Mapping[str, np.ndarray], num_classes: int) -> np.ndarray:
        """Server, per reply: the encoding's inverse."""
        return self.encoding.invert(arrays, num_classes)

    def release(self, uploads: np.ndarray, weights: np.ndarray, rnd: ServerRound) -> Release:
        """Server, per round: the server halves of the stages, in reverse order.

        ``uploads`` are the decoded ``(K, P, C)`` logits of the valid replies and
        ``weights`` their fusion weights; without privacy both come back unchanged.
        """
        out = Release(uploads, weights)
        for stage in reversed(self.stages):
            invert = getattr(stage, "invert", None)
            if invert is not None:
                out = invert(out.logits, out.weights, rnd)
        return out


def privacy_stages(
    clip: float,
    noise_multiplier: float,
    *,
    local: bool,
    reproducible: bool,
    sample_rate: float = 1.0,
) -> tuple[Stage, ...]:
    """client_dp's stages: :class:`Clip`, then :class:`LocalNoise` or :class:`CentralNoise`.

    ``sample_rate`` (the accountant's q) matters only to the server's central noisy mean.
    """
    noise: Stage = (
        LocalNoise(clip, noise_multiplier, reproducible)
        if local
        else CentralNoise(clip, noise_multiplier, reproducible, sample_rate)
    )
    return (Clip(clip), noise)


def client_chain(
    *,
    attack: Corrupt | None,
    privacy: tuple[Stage, ...],
    encoding: Encode,
) -> UploadChain:
    """A client's chain: its attack (``None`` when honest), client_dp stages, the encoding."""
    return UploadChain((*(() if attack is None else (attack,)), *privacy), encoding)


def upload_encoding(soft_labels: str, uplink: bool, temperature: float, topk: int) -> Encode:
    """The uploads' encoding: ``compression.soft_labels`` when ``uplink``, else fp32."""
    return Encode(soft_labels if uplink else "fp32", temperature, topk)


def server_chain(privacy: PrivacyPlan | None, encoding: Encode) -> UploadChain:
    """The server's chain for a run's privacy plan: it decodes and inverts client_dp.

    No attack stage (the server cannot tell an attacker); client_dp's stages use the
    plan's clip and multiplier, and the seeded source when the plan is not private.
    """
    if privacy is None or privacy.mechanism != "client_dp":
        return UploadChain((), encoding)
    assert privacy.clip is not None
    stages = privacy_stages(
        privacy.clip,
        privacy.noise_multiplier,
        local=privacy.local,
        reproducible=not privacy.private,
        sample_rate=privacy.sample_rate,
    )
    return UploadChain(stages, encoding)
