"""The project's container image: one image for every node kind (`python -m KIND --config
FILE`), built from the repository root's Dockerfile, which a render copies beside its files."""

from __future__ import annotations

from pathlib import Path

DOCKERFILE = Path(__file__).resolve().parents[2] / "Dockerfile"


def dockerfile() -> str | None:
    """The repository's Dockerfile; None outside a checkout (an installed package has none:
    the image is built from the repository)."""
    try:
        return DOCKERFILE.read_text()
    except FileNotFoundError:
        return None
