"""Warm start: one server-trained student reaches every client once, and clients adopt it."""

from __future__ import annotations

import numpy as np
import torch
from fedkd.strategies.warm_start import warm_start_model
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict

import fedkd
from fedkd import keys
from fedkd.client_app import app as client_app
from fedkd.data import make_splits
from fedkd.engines.inprocess import NODE_ID_OFFSET, InProcessGrid
from fedkd.models import build_seeded_model
from fedkd.teachers import build_teachers
from fedkd.training import evaluate
from fedkd.validation import load_config

from ..conftest import TINY


def test_clients_adopt_the_weights_they_receive():
    cfg = load_config(TINY)
    splits = make_splits(cfg.data, cfg.seed)
    model = build_seeded_model(cfg.student.model, splits.data.input_shape, 10, seed=123)
    grid = InProcessGrid(client_app, 2, {keys.RUN_CONFIG_JSON: cfg.model_dump_json()})
    record = RecordDict(
        {
            keys.CONFIG: ConfigRecord({keys.SERVER_ROUND: 1}),
            keys.WEIGHTS: ArrayRecord(model.state_dict()),
        }
    )
    (reply,) = grid.send_and_receive([Message(record, NODE_ID_OFFSET, MessageType.EVALUATE)])
    x, y = (torch.from_numpy(a) for a in splits.xy("test"))
    got = float(reply.content[keys.METRICS][keys.TEST_ACCURACY])
    assert got == evaluate(model, x, y)
    # ... and keep them: a later evaluate without weights reports the same student
    again = RecordDict({keys.CONFIG: ConfigRecord({keys.SERVER_ROUND: 2})})
    (reply,) = grid.send_and_receive([Message(again, NODE_ID_OFFSET, MessageType.EVALUATE)])
    assert float(reply.content[keys.METRICS][keys.TEST_ACCURACY]) == got


def test_warm_start_reaches_each_client_once_and_is_reported(tmp_path):
    over = ["strategy.fraction=0.5", "rounds=3", "baselines.local_only=false"]
    cold = fedkd.run(TINY, out=tmp_path / "cold", overrides=over).summary
    warm = fedkd.run(
        TINY, out=tmp_path / "warm", overrides=[*over, "strategy.warm_start_epochs=3"]
    ).summary
    assert cold["warm_start"] is None
    ws = warm["warm_start"]
    assert ws["epochs"] == 3 and 0 <= ws["test_accuracy"] <= 1 and ws["clients_reached"] == 4
    # 4 clients x one student (cnn:width=4,depth=1: 834 float32 parameters) extra, once
    extra = warm["communication"]["bytes_down"] - cold["communication"]["bytes_down"]
    assert 4 * 834 * 4 <= extra < 2 * 4 * 834 * 4


def test_teacher_free_warm_start_is_supervised_on_the_teacher_split():
    cfg = load_config(TINY, ["strategy.warm_start_epochs=2"])
    teachers = build_teachers(cfg)
    with_t = warm_start_model(cfg, teachers, use_teachers=True)
    without = warm_start_model(cfg, teachers, use_teachers=False)
    assert with_t is not None and without is not None
    diff = [
        float((a - b).abs().max())
        for a, b in zip(with_t.parameters(), without.parameters(), strict=True)
    ]
    assert max(diff) > 1e-4  # the teachers changed the result
    assert warm_start_model(load_config(TINY), teachers) is None
    assert np.isfinite(diff).all()
