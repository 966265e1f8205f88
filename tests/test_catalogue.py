"""The distillation catalogue end to end: client terms, what travels, config errors."""

import subprocess

import numpy as np
import pytest
import torch
from flwr.app import Context, RecordDict

import fedkd
from fedkd.client.extra_terms import extra_term
from fedkd.client.node_state import fresh_student, save_aux
from fedkd.client.private_data import private_data
from fedkd.client.public_data import public_data
from fedkd.client.train_job import TrainJob
from fedkd.config import DistillConfig
from fedkd.errors import ConfigError
from fedkd.losses import METHODS
from fedkd.losses.born_again import BornAgainTerm
from fedkd.losses.forward import features_and_logits
from fedkd.losses.hint import HintTerm
from fedkd.losses.mutual import MutualTerm
from fedkd.models import build_model
from fedkd.training import fit_distill, make_optimizer, predict_logits
from fedkd.validation import load_config

from .conftest import TINY, fedkd_cmd


def _context(cfg) -> Context:
    return Context(
        run_id=1,
        node_id=1,
        node_config={"partition-id": 0},
        state=RecordDict(),
        run_config={"fedkd-config-json": cfg.to_json()},
    )


def _job(cfg, rnd: int, knowledge=None) -> TrainJob:
    shared = public_data(cfg)
    ctx = _context(cfg)
    x_local, y_local = private_data(cfg, ctx, 0)
    model = fresh_student(cfg, shared, 0)
    rows = torch.arange(64)
    return TrainJob(
        cfg=cfg,
        public=shared,
        pid=0,
        rnd=rnd,
        malicious=False,
        x_local=x_local,
        y_local=y_local,
        model=model,
        opt=make_optimizer("adam", list(model.parameters()), 0.01),
        proxy_idx=rows,
        soft=torch.randn(64, shared.num_classes),
        knowledge=knowledge,
        reply_idx=rows,
        epochs=1,
        temperature=4.0,
        alpha=0.7,
        lr=0.01,
        gen=torch.Generator().manual_seed(0),
        send_weights=False,
        dp_mode="",
        dp_noise=0.0,
        dp_clip=0.0,
        dp_local=False,
    )


def _fit(job, extra):
    return fit_distill(
        job.model,
        job.opt,
        job.x_local,
        job.y_local,
        job.public.x_proxy[job.proxy_idx],
        job.soft,
        epochs=1,
        batch_size=32,
        temperature=4.0,
        alpha=0.7,
        gen=torch.Generator().manual_seed(1),
        extra=extra,
    )


def _params(module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def test_hint_adapter_trains_with_the_student_and_persists_on_the_device():
    cfg = load_config(TINY, ["distill.loss=hint", "rounds=2"])
    knowledge = torch.randn(64, 10, 6)
    job = _job(cfg, 1, knowledge.clone())
    ctx = _context(cfg)
    term = extra_term(ctx, job)
    assert isinstance(term, HintTerm) and term.beta == 1.0
    assert term.adapter(torch.zeros(2, 20, 4)).shape == (2, 10, 6)  # cnn:width=4,depth=1
    before = _params(term.adapter)
    _fit(job, term)
    after = _params(term.adapter)
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
    assert torch.equal(term.knowledge, knowledge)  # the teacher side is never updated
    save_aux(ctx, term.state())
    again = extra_term(ctx, _job(cfg, 2, knowledge))
    assert isinstance(again, HintTerm)
    for a, b in zip(after, _params(again.adapter), strict=True):
        assert torch.equal(a, b)


def test_a_new_born_again_generation_starts_a_fresh_student_taught_by_the_old_one():
    cfg = load_config(TINY, ["distill.loss=born_again", "rounds=4", "distill.generations=2"])
    ctx = _context(cfg)
    job1 = _job(cfg, 1)
    assert extra_term(ctx, job1) is None  # generation 1: response only
    _fit(job1, None)
    old = {k: v.clone() for k, v in job1.model.state_dict().items()}
    job3 = _job(cfg, 3)
    job3.model.load_state_dict(old)  # the student the client carried into round 3
    term = extra_term(ctx, job3)
    assert isinstance(term, BornAgainTerm)
    fresh = fresh_student(cfg, job3.public, 0, generation=2)
    for k, v in fresh.state_dict().items():
        assert torch.equal(job3.model.state_dict()[k], v)  # re-initialised
    ref = build_model(cfg.student.model, job3.public.input_shape, job3.public.num_classes)
    ref.load_state_dict(old)
    assert torch.allclose(term.previous_local, predict_logits(ref, job3.x_local))
    _fit(job3, term)
    for k, v in term.state()["previous"].items():  # the previous generation stays frozen
        assert torch.equal(v, old[k])
    save_aux(ctx, term.state())
    job4 = _job(cfg, 4)
    term4 = extra_term(ctx, job4)
    assert isinstance(term4, BornAgainTerm) and term4.keep["generation"] == 2
    assert not torch.equal(job4.model.state_dict()["head.bias"], fresh.state_dict()["head.bias"])


def test_mutual_peers_train_in_the_same_steps_and_persist():
    cfg = load_config(TINY, ["distill.loss=mutual", "distill.peers=3"])
    ctx = _context(cfg)
    job = _job(cfg, 1)
    term = extra_term(ctx, job)
    assert isinstance(term, MutualTerm) and len(term.peers) == 2
    before = [_params(p) for p in term.peers]
    _fit(job, term)
    for peer, b in zip(term.peers, before, strict=True):
        assert any(not torch.equal(x, y) for x, y in zip(b, _params(peer), strict=True))
    save_aux(ctx, term.state())
    again = extra_term(ctx, _job(cfg, 2))
    assert isinstance(again, MutualTerm)
    for p, q in zip(term.peers, again.peers, strict=True):
        for x, y in zip(_params(p), _params(q), strict=True):
            assert torch.equal(x, y)


def test_teacher_knowledge_shapes():
    torch.manual_seed(0)
    teachers = [
        build_model("cnn:width=6,depth=3", (40,), 10),
        build_model("cnn:width=3", (40,), 10),
    ]
    x = torch.randn(7, 40)
    distill = DistillConfig()
    feats = METHODS["hint"].teacher_knowledge(teachers, x, distill, seed=0)
    assert feats.shape == (7, 10, 6)
    assert np.allclose(feats, features_and_logits(teachers[0].eval(), x)[0].detach().numpy())
    maps = METHODS["attention"].teacher_knowledge(teachers, x, distill, seed=0)
    assert maps.shape == (7, 10) and np.allclose(np.linalg.norm(maps, axis=1), 1.0)
    assert METHODS["mutual"].teacher_knowledge(teachers, x, distill, seed=0) is None
    mlp = build_model("mlp:width=12", (40,), 10)
    assert features_and_logits(mlp, x)[0].shape == (7, 1, 12)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("catalogue")
    result = {}
    for loss in ("response", "hint", "rkd", "attention", "born_again", "mutual", "takd"):
        result[loss] = fedkd.run(
            TINY, overrides=[f"distill.loss={loss}", "baselines.local_only=false"], out=out / loss
        ).summary
    return result


@pytest.mark.parametrize("loss", ["hint", "rkd", "attention", "born_again", "mutual", "takd"])
def test_every_loss_runs_end_to_end(runs, loss):
    s = runs[loss]
    assert s["distill"]["loss"] == loss and s["distill"]["kind"] == METHODS[loss].kind
    assert s["final"]["student_accuracy_mean"] > 0.11  # better than chance on 10 classes
    assert s["communication"]["bytes_up"] == runs["response"]["communication"]["bytes_up"]


def test_teacher_features_travel_and_are_counted(runs):
    # tiny: 400 proxy rows, teacher 0 = cnn:width=8,depth=2 -> (10, 8) features per row,
    # attention maps (10,) per row; 4 clients x 2 rounds = 8 instructions
    base = runs["response"]["communication"]["by_phase_down"]["train"]
    for loss, floats in (("hint", 80), ("rkd", 80), ("attention", 10)):
        extra = runs[loss]["communication"]["by_phase_down"]["train"] - base
        expected = 8 * 400 * floats * 4
        # plus the Array entry itself (name, dtype, shape): under 256 bytes per instruction
        assert expected <= extra <= expected + 8 * 256, (loss, extra, expected)


def test_takd_teaches_clients_with_the_last_assistant(runs):
    s = runs["takd"]
    (ta,) = s["distill"]["assistants"]
    assert ta["spec"] == "cnn:width=24,depth=2" and 0.2 < ta["test_accuracy"] <= 1
    assert [t["spec"] for t in s["models"]["teachers"]] == ["cnn:width=8,depth=2", "mlp:width=32"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["distill.loss=hint", "strategy.name=dsfl"], "needs the server's teachers"),
        (["distill.loss=attention", "teachers.count=0"], "needs the server's teachers"),
        (["distill.loss=born_again", "strategy.name=fedavg"], "replaces them with a global"),
        (
            ["distill.loss=rkd", "privacy.mode=dp_sgd", "privacy.epsilon=4"],
            "supports logit losses only",
        ),
        (["distill.loss=hint", "distill.feature_teacher=2"], "outside 0..1"),
        (
            ["distill.loss=attention", "privacy.mode=pate", "privacy.epsilon=4"],
            "sends the teachers' attention, which privacy.mode='pate' does not protect",
        ),
        (["distill.loss=takd", "privacy.mode=pate", "privacy.epsilon=4"], "cannot be combined"),
        (["distill.peers=1"], "distill.peers=1"),
        (["distill.assistants=['resnet']"], "unknown model family 'resnet'"),
        (["data.student_view=blur:3"], "unknown view 'blur:3'; allowed: full, downsample:K"),
    ],
)
def test_bad_catalogue_configs_are_one_line(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(TINY, overrides)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_cli_rejects_a_view_that_does_not_fit_the_data_with_exit_2(tmp_path):
    proc = subprocess.run(
        fedkd_cmd("run", str(TINY), "--set", "data.student_view=crop:0:99", "--out", str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "data.student_view='crop:0:99'" in proc.stderr and "Traceback" not in proc.stderr


def test_mutual_peers_count_in_the_virtual_clock():
    from fedkd.devices import DeviceFleet

    tiers = ["devices.tiers=[{name='phone', preset='low_end_phone', share=1.0}]"]
    args = {"bytes_down": 0, "bytes_up": 0, "n_proxy": 400, "n_local": 100, "n_reply": 0}
    one = DeviceFleet(load_config(TINY, tiers), (40,), 10).time(0, **args)
    three = DeviceFleet(
        load_config(TINY, [*tiers, "distill.loss=mutual", "distill.peers=3"]), (40,), 10
    ).time(0, **args)
    assert three.compute_s == pytest.approx(3 * one.compute_s)
    assert three.download_s == one.download_s


def test_rkd_relations_use_the_first_relation_batch_rows():
    from fedkd.losses import StepBatch
    from fedkd.losses.rkd import RKDTerm, rkd_loss

    feats, know = torch.randn(10, 3, 2), torch.randn(20, 4)
    pi = torch.arange(10, 20)
    batch = StepBatch(feats, 10, pi, None, torch.zeros(10, 5), feats, None, None, 4.0, 0.7)
    got = RKDTerm(1.0, know, rows=6).term(batch)
    assert torch.equal(got, rkd_loss(feats[:6], know[10:16]))


def test_rkd_random_projection_keeps_relations_at_a_tenth_of_the_floats():
    from fedkd.losses.rkd import _pairwise_distances, random_projection, rkd_loss

    rng = np.random.default_rng(3)
    feats = rng.normal(size=(64, 10, 32)).astype(np.float32)  # quickstart teacher: 320 floats
    low = random_projection(feats, 32, seed=0)
    assert low.shape == (64, 32)
    assert np.array_equal(low, random_projection(feats, 32, seed=0))
    d_full = _pairwise_distances(torch.from_numpy(feats.reshape(64, -1)))
    d_low = _pairwise_distances(torch.from_numpy(low))
    off = ~torch.eye(64, dtype=torch.bool)
    ratio = d_low[off] / d_full[off]
    assert abs(float(ratio.mean()) - 1) < 0.05 and float(ratio.std()) < 0.2
    # a student matching the full features has a small RKD loss against the projection
    student = torch.from_numpy(feats.reshape(64, -1))
    assert rkd_loss(student, torch.from_numpy(low)).item() < 0.05


def test_rkd_projection_shrinks_what_travels(tmp_path):
    s = fedkd.run(
        TINY,
        overrides=["distill.loss=rkd", "distill.rkd_projection=8", "baselines.local_only=false"],
        out=tmp_path / "run",
    ).summary
    plain = fedkd.run(
        TINY, overrides=["baselines.local_only=false"], out=tmp_path / "plain"
    ).summary
    extra = (
        s["communication"]["by_phase_down"]["train"]
        - plain["communication"]["by_phase_down"]["train"]
    )
    assert 8 * 400 * 8 * 4 <= extra <= 8 * 400 * 8 * 4 + 8 * 256  # 8 floats per row, not 80
