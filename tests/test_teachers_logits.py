"""Teachers' batched inference: same logits in any batch size, bounded activations."""

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from fedkd.models import build_model
from fedkd.teachers import build_teachers
from fedkd.teachers.logits import activation_bytes, batched_logits, bounded_batch
from fedkd.validation import load_config

from .conftest import TINY


def test_batched_logits_equal_one_pass_in_eval_mode_without_a_graph():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(40, 16), nn.BatchNorm1d(16), nn.Dropout(0.5), nn.Linear(16, 10))
    model.train()
    x = torch.randn(103, 40)
    z = batched_logits(model, x, batch_size=7, device="cpu")
    assert not model.training and not z.requires_grad and z.shape == (103, 10)
    with torch.no_grad():
        torch.testing.assert_close(z, model(x), rtol=0, atol=1e-6)
    assert batched_logits(model, x[:0]).shape == (0, 0)


def test_a_model_that_returns_no_tensor_is_refused():
    class Pair(nn.Module):
        def forward(self, x):
            return x, x

    with pytest.raises(TypeError, match="returned a tuple, not a tensor of logits"):
        batched_logits(Pair(), torch.zeros(2, 3))


def test_activation_bytes_sum_every_module_output_for_one_row():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    # Linear 8 + ReLU 8 + Linear 3 + the Sequential's own output 3, float32
    assert activation_bytes(model, torch.zeros(1, 4)) == (8 + 8 + 3 + 3) * 4
    assert not model._forward_hooks and not model[0]._forward_hooks


def test_bounded_batch_keeps_a_batch_under_the_budget():
    assert bounded_batch(per_row=2**20, cap=2048, budget_mb=256) == 256
    assert bounded_batch(per_row=10, cap=2048, budget_mb=256) == 2048
    assert bounded_batch(per_row=2**30, cap=2048, budget_mb=256) == 1


def test_a_given_teacher_gives_the_same_logits_one_row_at_a_time(tmp_path, caplog):
    path = tmp_path / "w.safetensors"
    save_file(build_model("cnn:width=8,depth=2", (40,), 10).state_dict(), str(path))
    given = [
        f"teachers.given=[{{model='cnn:width=8,depth=2', weights='{path}'}}]",
        "teachers.count=1",
    ]
    free = build_teachers(load_config(TINY, given))
    with caplog.at_level("INFO", logger="fedkd"):
        tight = build_teachers(load_config(TINY, [*given, "teachers.inference_memory_mb=0.0001"]))
    assert "1 rows per forward pass" in caplog.text
    np.testing.assert_allclose(tight.proxy_logits, free.proxy_logits, rtol=0, atol=1e-5)
    assert tight.test_accuracy == free.test_accuracy
