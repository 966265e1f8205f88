"""``fedkd compare``: several strategies (and seeds) on one config, side by side.

:func:`compare` calls :func:`fedkd.run` once per strategy and seed, each into its own run
directory ``OUT/<strategy>-seed<S>/``; data and teachers are cached by config hash, so
only the first run pays for them. After every finished run it rewrites ``compare.json``,
``compare.md`` and ``compare.png`` atomically, so a crash keeps the finished rows.

The table and JSON are built by pure functions (:func:`run_row`, :func:`summarize`,
:func:`markdown_table`) that can be tested without running anything.

Files: :mod:`~fedkd.compare.driver` (:func:`compare`), :mod:`~fedkd.compare.inputs`
(seeds and names), :mod:`~fedkd.compare.table` (pure rows and table),
:mod:`~fedkd.compare.outputs` (the files).
"""

from fedkd import api
from fedkd.compare.driver import CompareProgress, compare, default_compare_dir, plan_runs
from fedkd.compare.inputs import (
    SEEDS_ALLOWED,
    parse_list,
    parse_seeds,
    run_dir_name,
    run_overrides,
    validate_seeds,
    validate_strategies,
)
from fedkd.compare.outputs import plot_compare, write_outputs
from fedkd.compare.table import (
    METRICS,
    CompareResult,
    curves,
    failed_row,
    markdown_report,
    markdown_table,
    one_line,
    run_row,
    summarize,
)

__all__ = [
    "METRICS",
    "SEEDS_ALLOWED",
    "CompareProgress",
    "CompareResult",
    "api",
    "compare",
    "curves",
    "default_compare_dir",
    "failed_row",
    "markdown_report",
    "markdown_table",
    "one_line",
    "parse_list",
    "parse_seeds",
    "plan_runs",
    "plot_compare",
    "run_dir_name",
    "run_overrides",
    "run_row",
    "summarize",
    "validate_seeds",
    "validate_strategies",
    "write_outputs",
]
