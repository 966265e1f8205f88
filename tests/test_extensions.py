"""Researchers register a loss and a model family from their own module, select them by name."""

import math

import torch

import fedkd

from .conftest import TINY


@fedkd.register_loss("test_mse_logits")
def mse_logits(student_logits, teacher_logits, temperature):
    return ((student_logits - teacher_logits.detach()) ** 2).mean()


calls = {"n": 0}


@fedkd.register_model("test_tiny")
def tiny(input_shape, num_classes, width: int = 4):
    calls["n"] += 1
    return torch.nn.Sequential(
        torch.nn.Flatten(),
        torch.nn.Linear(math.prod(input_shape), width),
        torch.nn.ReLU(),
        torch.nn.Linear(width, num_classes),
    )


def test_registered_loss_and_model_run_end_to_end(tmp_path):
    result = fedkd.run(
        TINY,
        out=tmp_path,
        overrides=[
            "distill.loss=test_mse_logits",
            "student.model=test_tiny:width=6",
            "baselines.local_only=false",
        ],
    )
    s = result.summary
    assert s["models"]["student"] == {
        "spec": "test_tiny:width=6",
        "parameters": 40 * 6 + 6 + 6 * 10 + 10,
    }
    assert calls["n"] > 0 and s["final"]["student_accuracy_mean"] is not None
    assert s["baselines"]["local_only_accuracy_mean"] is None
