"""Models shipped inside the package, so that the main job runs with no download.

``m3fm-small`` is the report model trained by the ``m3fm-small`` recipe (CT and chest X-ray
images, English and Chinese reports); its model card (``README.md``) states the data, their
licences, the command and commit that produced it and its validation scores.
"""

from __future__ import annotations

from pathlib import Path

from m3fm.registry import NotAvailableError

DEFAULT_MODEL_NAME = "m3fm-small"
MODELS_DIR = Path(__file__).parent


def default_model_dir() -> Path:
    """The bundled default model's directory; NotAvailableError if this install lacks it."""
    directory = MODELS_DIR / DEFAULT_MODEL_NAME
    if not (directory / "config.json").is_file():
        raise NotAvailableError(
            f"this m3fm installation has no bundled {DEFAULT_MODEL_NAME} model "
            f"(looked in {directory}); pass --checkpoint DIR"
        )
    return directory
