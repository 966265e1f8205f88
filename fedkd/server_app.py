"""Flower ServerApp: the edge between ``flwr run`` / a SuperLink and :mod:`fedkd.experiment`.

The ``ServerApp`` only unpacks the Flower run config and the run directory, then runs
:func:`fedkd.experiment.run_server`; :func:`fedkd.run` calls that directly with an
in-process engine's Grid.
"""

from __future__ import annotations

import logging
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedkd import keys
from fedkd.client.run_config import config_from_run_config
from fedkd.experiment import Progress, default_out_dir, run_server
from fedkd.results import RunDirLock, check_out_dir

__all__ = ["Progress", "app", "default_out_dir", "main", "run_server"]

log = logging.getLogger("fedkd")

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """ServerApp entry point for ``flwr run`` and deployment (reads the run config).

    Parameters
    ----------
    grid : Grid
        The Grid Flower hands the ServerApp.
    context : Context
        Its run config holds the fedkd config (:data:`fedkd.keys.RUN_CONFIG_JSON`) and,
        optionally, the run directory (:data:`fedkd.keys.RUN_OUT`).

    """
    cfg = config_from_run_config(dict(context.run_config))
    out = check_out_dir(str(context.run_config.get(keys.RUN_OUT, "")) or default_out_dir(cfg))
    with RunDirLock(out):  # one fedkd process per run directory
        result = run_server(grid, cfg, out)
    log.info("fedkd summary written to %s", Path(out) / "summary.json")
    log.info("final student accuracy mean %s", result.summary["final"]["student_accuracy_mean"])
