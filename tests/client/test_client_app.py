"""The ClientApp is a thin edge: its public path and its handlers."""

import importlib

from flwr.clientapp import ClientApp

from fedkd import client_app
from fedkd.client.run_config import config_from_run_config


def test_the_public_app_path_resolves_to_a_client_app():
    module, _, name = "fedkd.client_app:app".partition(":")
    assert isinstance(getattr(importlib.import_module(module), name), ClientApp)


def test_the_app_module_holds_only_its_handlers_and_the_config_resolver():
    public = {n for n in vars(client_app) if not n.startswith("_")}
    handlers = {"train", "evaluate_student", "query_info", "query_local_only"}
    assert handlers <= public
    assert client_app.config_from_run_config is config_from_run_config
