"""The project's container image: one image for every node kind (`python -m KIND --config
FILE`), built from the repository root's Dockerfile, which a render copies beside its files."""

from __future__ import annotations

from pathlib import Path

DOCKERFILE = Path(__file__).resolve().parents[2] / "Dockerfile"


def dockerfile() -> str:
    """The repository's Dockerfile (render runs from a checkout: the image is built from it)."""
    try:
        return DOCKERFILE.read_text()
    except OSError as exc:
        raise OSError(
            f"no Dockerfile at the repository root ({DOCKERFILE}): {exc.strerror}"
        ) from exc
