"""The README's tables of config keys are the ones generated from the config models."""

from __future__ import annotations

from pathlib import Path

from common.config.docs import REGENERATE, SECTIONS, marked, update

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_config_tables_match_the_models() -> None:
    text = README.read_text()
    stale = [name for name in SECTIONS if marked(name) not in text]
    assert not stale, f"README.md's config tables {stale} are out of date: run {REGENERATE}"
    assert update(text) == text


def test_a_changed_key_shows_as_drift() -> None:
    text = README.read_text().replace("| `batch_ms` |", "| `batch_ms_old` |")
    assert update(text) != text
