import json
import subprocess
from pathlib import Path

import pytest
from pydantic import BaseModel

from fedkd.config import FedkdConfig, apply_overrides
from fedkd.config.reference import schema_markdown
from fedkd.errors import ConfigError
from fedkd.validation import load_config

from .conftest import ROOT, TINY, fedkd_cmd


def test_defaults_validate_and_are_frozen():
    cfg = load_config()
    assert cfg.engine == "inprocess" and cfg.distill.alpha == 0.7
    with pytest.raises(Exception, match="frozen"):
        cfg.rounds = 3  # type: ignore[misc]


def test_overrides_coerce_types():
    cfg = load_config(
        TINY,
        [
            "rounds=7",
            "distill.alpha=0.25",
            "teachers.models=['mlp:width=8', 'cnn:width=4']",
            "baselines.local_only=false",
            "data.name=npz:/tmp/some file.npz",
            "name=hello",
        ],
    )
    assert cfg.rounds == 7 and isinstance(cfg.rounds, int)
    assert cfg.distill.alpha == 0.25
    assert cfg.teachers.models == ["mlp:width=8", "cnn:width=4"]
    assert cfg.baselines.local_only is False
    assert cfg.data.name == "npz:/tmp/some file.npz"
    assert cfg.name == "hello"


def test_apply_overrides_does_not_mutate_input():
    base = {"distill": {"alpha": 0.1}}
    out = apply_overrides(base, ["distill.alpha=0.9"])
    assert base["distill"]["alpha"] == 0.1 and out["distill"]["alpha"] == 0.9


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("num_clients=0", "num_clients=0: Input should be greater than or equal to 1"),
        ("rounds=0", "rounds=0: Input should be greater than or equal to 1"),
        ("strategy.fraction=0", "strategy.fraction=0: Input should be greater than 0"),
        ("strategy.fraction=1.5", "strategy.fraction=1.5: Input should be less than or equal to 1"),
        ("distill.temperature=0", "distill.temperature=0: Input should be greater than 0"),
        ("distill.temperature=-2", "distill.temperature=-2"),
        ("distill.alpha=1.5", "distill.alpha=1.5: Input should be less than or equal to 1"),
        ("distill.alpha=-0.1", "distill.alpha=-0.1: Input should be greater than or equal to 0"),
        ("engine=warp", "engine='warp': unknown engine; allowed: inprocess"),
        (
            "strategy.name=magic",
            "strategy.name='magic': unknown strategy; allowed: "
            "centralized_kd, dsfl, fedavg, feddf, fedmd, hybrid, local, multi_teacher",
        ),
        (
            "strategy.fusion=max",
            "strategy.fusion='max': unknown fusion; allowed: accuracy_weighted",
        ),
        ("student.model=resnet", "unknown model family 'resnet'; allowed: cnn, mlp"),
        ("teachers.models=['vit']", "unknown model family 'vit'"),
        (
            "data.name=imagenet",
            "data.name='imagenet': unknown dataset; allowed: hf, mnist1d, npz (npz:PATH, hf:NAME",
        ),
        (
            "distill.loss=nope",
            "distill.loss='nope': unknown loss; allowed: attention, born_again, ",
        ),
        ("rounds=abc", "rounds='abc': Input should be a valid integer"),
        (
            "partition.kind=zipf",
            "partition.kind='zipf': Input should be 'iid', 'dirichlet' or 'classes'",
        ),
        (
            "distill.temprature=2",
            "unknown config key 'distill.temprature'; allowed in [distill]: loss, temperature",
        ),
        ("bogus=1", "unknown config key 'bogus'; allowed at top level: name, seed"),
        ("novalue", "malformed override 'novalue'; use dotted.key=value"),
    ],
)
def test_bad_values_name_key_value_and_allowed(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(TINY, [override])
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_an_unknown_loss_lists_every_registered_one():
    from fedkd.losses import LOSS_REGISTRY

    with pytest.raises(ConfigError) as err:
        load_config(TINY, ["distill.loss=nope"])
    assert str(err.value).endswith(f"allowed: {', '.join(sorted(LOSS_REGISTRY))}")
    assert {"response", "dkd", "takd"} <= set(LOSS_REGISTRY)


def test_missing_and_broken_toml(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("rounds = [1,\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_config(bad)


def _all_fields(model: type[BaseModel], prefix: str = ""):
    for name, field in model.model_fields.items():
        ann = field.annotation
        key = f"{prefix}{name}"
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from _all_fields(ann, key + ".")
        else:
            yield key, field


def test_every_field_is_documented():
    fields = list(_all_fields(FedkdConfig))
    assert len(fields) > 30
    for key, field in fields:
        assert field.description, f"{key} has no description"
    reference = schema_markdown()
    for key, _ in fields:
        assert f"`{key}`" in reference


def test_docs_config_md_is_up_to_date():
    # regenerate with: fedkd config --markdown > docs/config.md
    assert (ROOT / "docs" / "config.md").read_text().strip() == schema_markdown().strip()


def test_config_command_prints_resolved_config_and_schema():
    out = subprocess.run(
        fedkd_cmd("config", str(TINY), "--set", "rounds=3"),
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(out.stdout)["rounds"] == 3
    schema = subprocess.run(
        fedkd_cmd("config", "--schema"), capture_output=True, text=True, check=True
    )
    assert "distill" in json.loads(schema.stdout)["properties"]


def test_config_json_roundtrip():
    cfg = load_config(TINY)
    again = load_config(json.loads(cfg.to_json()))
    assert again == cfg


def test_example_configs_validate():
    for path in (ROOT / "simulations").glob("*.toml"):
        load_config(Path(path))
