"""What a node keeps in its Context between rounds."""

import torch
from flwr.app import Context, RecordDict

from fedkd.client.node_state import (
    fresh_student,
    load_aux,
    load_student,
    save_aux,
    save_student,
    student_weights,
)
from fedkd.client.public_data import public_data
from fedkd.validation import load_config

from ..conftest import TINY


def _context() -> Context:
    return Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})


def test_a_saved_student_and_its_optimizer_come_back_and_student_weights_reads_them():
    cfg = load_config(TINY)
    public = public_data(cfg)
    ctx = _context()
    assert student_weights(ctx.state) is None
    model, opt = load_student(ctx, cfg, public, 0)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    save_student(ctx, model, opt)
    again, _ = load_student(ctx, cfg, public, 0)
    saved = student_weights(ctx.state)
    for name, tensor in model.state_dict().items():
        assert torch.equal(again.state_dict()[name], tensor)
        assert torch.equal(saved[name], tensor)


def test_fresh_students_depend_on_partition_and_generation_only():
    cfg = load_config(TINY)
    public = public_data(cfg)
    a, b = fresh_student(cfg, public, 0), fresh_student(cfg, public, 0)
    other = fresh_student(cfg, public, 1)
    born = fresh_student(cfg, public, 0, generation=2)
    first = next(iter(a.state_dict()))
    assert torch.equal(a.state_dict()[first], b.state_dict()[first])
    assert not torch.equal(a.state_dict()[first], other.state_dict()[first])
    assert not torch.equal(a.state_dict()[first], born.state_dict()[first])


def test_empty_aux_state_is_not_stored():
    ctx = _context()
    save_aux(ctx, {})
    assert load_aux(ctx) == {} and len(ctx.state) == 0
    save_aux(ctx, {"generation": 2})
    assert load_aux(ctx) == {"generation": 2}
