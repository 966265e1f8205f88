"""The README's two set-up commands are the ones CI runs."""

import json
import re

from .conftest import ROOT, load_script


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


def _quickstart_script():
    return load_script("simulations/readme_quickstart.py", "readme_quickstart")


def test_readme_quickstart_block_is_the_kept_run_and_its_json():
    # regenerate with: python simulations/readme_quickstart.py (a fresh-clone quickstart)
    script = _quickstart_script()
    output = script.OUTPUT.read_text()
    readme = (ROOT / "README.md").read_text()
    assert script.render(readme, output) == readme
    figures = json.loads(script.FIGURES.read_text())
    pct = lambda v: f"{100 * v:.2f}%"  # noqa: E731
    block = "\n".join(script.table_lines(output))
    students = " / ".join(
        pct(figures[k])
        for k in ("student_accuracy_mean", "student_accuracy_p10", "student_accuracy_min")
    )
    assert students in block
    assert pct(figures["teacher_accuracy"]) in block
    assert pct(figures["local_only_accuracy_mean"]) in block
    flat = " ".join(block.replace("│", " ").split())
    for acc in figures["teacher_accuracies"]:
        assert pct(acc) in flat
    assert "(cached)" not in block  # measured from an empty cache, as on a fresh clone
