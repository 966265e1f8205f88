"""The run orchestrator: an :class:`Experiment` builds everything once, then runs the rounds.

:meth:`Experiment.build` prepares the data splits, the teachers (and assistants), the
teacher knowledge of a catalogue method, the device fleet, the privacy plan and the
strategy, and restores a checkpoint when resuming. :meth:`Experiment.run` then runs the
strategy's rounds; what happens after each round (``metrics.jsonl``, the checkpoint,
progress) is done by round callbacks registered on the experiment (see
:meth:`Experiment.add_round_callback`). The end-of-run outputs are written by
:mod:`fedkd.report`.

:func:`run_server` is the one call the ServerApp and :func:`fedkd.run` make.

Files: :mod:`~fedkd.experiment.orchestrator` (the class), :mod:`~fedkd.experiment.steps`
(the build steps), :mod:`~fedkd.experiment.round_callbacks`.
"""

from fedkd.experiment.orchestrator import (
    Experiment,
    Progress,
    RoundCallback,
    default_out_dir,
    run_server,
)
from fedkd.experiment.round_callbacks import CheckpointWriter, MetricsWriter
from fedkd.experiment.steps import method_knowledge, replan_from_discovery, with_pate_release

__all__ = [
    "CheckpointWriter",
    "Experiment",
    "MetricsWriter",
    "Progress",
    "RoundCallback",
    "default_out_dir",
    "method_knowledge",
    "replan_from_discovery",
    "run_server",
    "with_pate_release",
]
