"""The upload chain (fedkd.uploads): the client half, its inverse on the server."""

import numpy as np
import pytest

from fedkd.attacks import corrupt_logits
from fedkd.compression import decode, encode
from fedkd.privacy.client_dp import clip_upload, local_noise, local_snr, noisy_mean
from fedkd.privacy.noise import TAG_CENTRAL, TAG_LOCAL, SeededNoise
from fedkd.uploads import (
    Corrupt,
    Encode,
    ServerRound,
    UploadChain,
    Uploader,
    client_chain,
    privacy_stages,
    upload_encoding,
)

Z = np.random.default_rng(3).normal(0, 4, (20, 10)).astype(np.float32)


@pytest.mark.parametrize("kind", ["random_logits", "scaled_logits", "label_flip"])
def test_client_chain_is_attack_clip_noise_encode_in_that_order(kind):
    who = Uploader(seed=7, partition=2, server_round=3)
    chain = client_chain(
        attack=Corrupt(kind, 5.0),
        privacy=privacy_stages(0.5, 1.5, local=True, reproducible=True, sample_rate=1.0),
        encoding=Encode("int8", 2.0, 3),
    )
    got = chain.apply(Z.copy(), who)
    z = corrupt_logits(Z.copy(), kind, 5.0, np.random.default_rng([7, 12, 2, 3]))
    z = local_noise(clip_upload(z, 0.5), 0.5, 1.5, SeededNoise(7, TAG_LOCAL, 2, 3))
    want = encode(z, "int8", temperature=2.0, k=3)
    assert got.keys() == want.keys()
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])


def test_an_empty_upload_skips_the_dp_stages_and_plain_chains_only_encode():
    who = Uploader(1, 0, 1)
    dp = privacy_stages(0.5, 1.5, local=True, reproducible=True, sample_rate=1.0)
    empty = client_chain(attack=None, privacy=dp, encoding=Encode()).apply(Z[:0], who)
    assert empty["logits"].shape == (0, 10)
    plain = UploadChain(encoding=upload_encoding("fp16", False, 1.0, 1)).apply(Z, who)
    np.testing.assert_array_equal(plain["logits"], Z)  # uplink=false: fp32 on the wire


def test_server_inverts_in_reverse_order_central_and_local():
    uploads = np.stack([clip_upload(Z, 0.5), clip_upload(2 * Z, 0.5)])
    rnd = ServerRound(seed=7, server_round=4, clients=10)
    central = UploadChain(privacy_stages(0.5, 2.0, local=False, reproducible=True, sample_rate=0.3))
    out = central.release(uploads, np.array([3.0, 4.0]), rnd)
    want, snr = noisy_mean(uploads, 0.5, 2.0, SeededNoise(7, TAG_CENTRAL, 4), 0.3 * 10)
    np.testing.assert_array_equal(out.logits, want)
    assert out.snr == snr and out.weights.tolist() == [1.0]
    local = UploadChain(privacy_stages(0.5, 2.0, local=True, reproducible=True, sample_rate=1))
    out = local.release(uploads, np.array([3.0, 4.0]), rnd)
    assert out.logits is uploads and out.weights.tolist() == [1.0, 1.0]
    assert out.snr == local_snr(uploads, 0.5, 2.0)
    plain = UploadChain().release(uploads, np.array([3.0, 4.0]), rnd)
    assert plain.snr is None and plain.weights.tolist() == [3.0, 4.0]
    arrays = encode(Z, "topk", temperature=2.0, k=3)
    np.testing.assert_array_equal(UploadChain().decode(arrays, 10), decode(arrays, 10))
