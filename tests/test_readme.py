"""The README's two set-up commands are the ones CI runs."""

import re

from .conftest import ROOT


def _bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def test_readme_starts_with_exactly_two_setup_commands():
    text = (ROOT / "README.md").read_text()
    head = text.split("\n## ", 1)[0]
    blocks = _bash_blocks(head)
    assert len(blocks) == 2
    run_cmd, test_cmd = (b.strip() for b in blocks)
    assert "\n" not in run_cmd and "\n" not in test_cmd
    assert (
        run_cmd.startswith("python3.11 -m venv .venv")
        and "fedkd run simulations/quickstart.toml" in run_cmd
    )
    assert test_cmd.startswith("python3.11 -m venv .venv") and "pytest" in test_cmd
    # .ci/run calls the README's test command verbatim
    assert test_cmd in (ROOT / ".ci" / "run").read_text()


def test_readme_table_is_filled_in():
    assert "QUICKSTART_TABLE" not in (ROOT / "README.md").read_text()
