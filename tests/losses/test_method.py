"""A KD method is one self-registering file: metadata, loss, rows, client term, knowledge."""

import pkgutil

import pytest
import torch

import fedkd.losses as losses
from fedkd.errors import ConfigError
from fedkd.losses import (
    LOSS_REGISTRY,
    METHODS,
    ROW_LOSSES,
    KDMethod,
    catalogue,
    method_of,
    register_method,
    resolve_loss,
    resolve_rows,
    soft_target_loss,
)
from fedkd.validation import load_config

from ..conftest import TINY

HELPERS = {"forward", "hinton", "method"}  # modules of the package that are no method


def test_every_method_file_registers_itself_under_its_file_name():
    files = {m.name for m in pkgutil.iter_modules(losses.__path__)} - HELPERS
    assert files <= set(METHODS)
    assert {"response", "hint", "rkd", "attention", "born_again", "mutual", "takd"} <= files
    for name in files:
        assert type(METHODS[name]).__module__ == f"fedkd.losses.{name}"
        assert name in LOSS_REGISTRY


def test_catalogue_metadata_is_complete_and_ordered():
    names = [m.name for m in catalogue()]
    assert names[0] == "response"
    for m in catalogue():
        assert (
            m.kind and m.formula and m.paper and m.knowledge in ("logits", "features", "attention")
        )
        assert (m.knowledge != "logits") <= m.needs_teachers  # knowledge comes from teachers
    terms = {m.name for m in catalogue() if m.has_client_term}
    assert {"hint", "rkd", "attention", "born_again", "mutual"} <= terms
    assert not {"response", "takd"} & terms
    assert set(ROW_LOSSES) >= {"response", "takd"}


class _Scaled(KDMethod):
    name = "test_scaled"
    kind = "test"
    formula = "scale * response"
    paper = "-"
    params = {"scale": 2.0}

    @staticmethod
    def loss(s, t, temperature, *, scale):
        return scale * soft_target_loss(s, t, temperature)

    @staticmethod
    def rows(s, t, temperature, *, scale):
        return scale * losses.soft_target_rows(s, t, temperature)


@pytest.fixture
def scaled():
    register_method(_Scaled)
    yield METHODS["test_scaled"]
    for registry in (METHODS, LOSS_REGISTRY, ROW_LOSSES):
        registry.pop("test_scaled", None)


def test_a_method_declares_parameters_and_distill_params_binds_them(scaled):
    s, t = torch.randn(4, 3), torch.randn(4, 3)
    base = soft_target_loss(s, t, 2.0)
    assert torch.allclose(LOSS_REGISTRY["test_scaled"](s, t, 2.0), 2 * base)
    assert torch.allclose(resolve_loss("test_scaled", {"scale": 3.0})(s, t, 2.0), 3 * base)
    rows = resolve_rows("test_scaled", {"scale": 3.0})
    assert torch.allclose(rows(s, t, 2.0).mean(), 3 * base)
    assert method_of("test_scaled") is scaled
    with pytest.raises(ValueError, match="allowed: scale"):
        scaled.resolve({"nope": 1.0})


def test_distill_params_are_checked_against_the_chosen_method(scaled):
    cfg = load_config(TINY, ["distill.loss=test_scaled", "distill.params.scale=0.5"])
    assert cfg.distill.params == {"scale": 0.5}
    with pytest.raises(ConfigError, match="scale"):
        load_config(TINY, ["distill.loss=test_scaled", "distill.params.width=1"])
    with pytest.raises(ConfigError, match="distill.params"):
        load_config(TINY, ["distill.loss=response", "distill.params.scale=1"])


def test_user_logit_losses_are_no_catalogue_method():
    @losses.register_loss("test_plain")
    def plain(s, t, temperature):
        return ((s - t) ** 2).mean()

    try:
        assert method_of("test_plain") is None
        assert resolve_loss("test_plain") is plain
        assert resolve_rows("test_plain") is None
        with pytest.raises(ValueError, match="no distill.params"):
            resolve_loss("test_plain", {"a": 1.0})
    finally:
        LOSS_REGISTRY.pop("test_plain")
