"""The README's configuration table is the settings classes' own table."""

from __future__ import annotations

from pathlib import Path

from scripts.settings_table import rows

ROOT = Path(__file__).resolve().parents[2]


def test_every_setting_is_documented() -> None:
    readme = (ROOT / "README.md").read_text()
    for row in rows():
        assert row in readme, f"README.md lacks or misstates: {row}"


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in (ROOT / "README.md").read_text()
    assert ci.strip().splitlines()[-1] == "make test"
