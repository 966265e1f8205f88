"""docs/losses.md is what simulations/losses_table.py renders from the kept results."""

import json

from .conftest import ROOT, load_script


def _script():
    return load_script("simulations/losses_table.py", "losses_table")


def test_docs_losses_md_is_rendered_from_the_measured_rows():
    # regenerate with: python simulations/losses_table.py (skips rows already measured)
    store = json.loads((ROOT / "docs" / "results" / "losses_table.json").read_text())
    script = _script()
    assert (ROOT / "docs" / "losses.md").read_text() == script.render(store["rows"], store["meta"])
    # every loss of the catalogue and every encoding has a measured row
    for row in [*script.LOSS_ROWS, *script.COMPRESSION_ROWS, *script.VIEW_ROWS]:
        assert store["rows"][row]["mean"] > 0.1, row


def test_markdown_cells_escape_pipes():
    assert _script()._cell("KL(p || q)") == "KL(p \\|\\| q)"
