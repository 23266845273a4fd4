"""The catalog of known plugins: one small TOML file per plugin in ``known_plugins/``.

It lets a user find plugins that are not installed (`m3fm plugins available`) and see whether
an installed one fits this m3fm.  A third party adds its plugin by a pull request adding one
file; the test suite validates every file against :class:`CatalogEntry`.
"""

from __future__ import annotations

import importlib.util
import tomllib
from pathlib import Path
from typing import Literal

from packaging.version import InvalidVersion, Version
from pydantic import BaseModel, ConfigDict, Field, HttpUrl, ValidationError, field_validator

from .errors import ConfigError
from .specs import Name

CATALOG_DIR = Path(__file__).parent / "known_plugins"


class CatalogEntry(BaseModel):
    """What the catalog knows of one plugin."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name = Field(description="The name the plugin provides, as used on the command line.")
    kind: Literal["modality", "language", "dataset"] = Field(description="What it provides.")
    description: str = Field(min_length=1, description="One line for `m3fm plugins available`.")
    package: str = Field(min_length=1, description="The distribution to `pip install`.")
    module: str = Field(min_length=1,
                        description="A module whose presence shows the plugin is installed.")
    min_api: str = Field(description="Lowest plugin-API version it works with, e.g. `1.1`.")
    homepage: HttpUrl = Field(description="Where its code and documentation live.")
    maintainers: list[str] = Field(min_length=1, description="Who answers its issues.")

    @field_validator("min_api")
    @classmethod
    def _version(cls, value: str) -> str:
        try:
            Version(value)
        except InvalidVersion:
            raise ValueError(f"{value!r} is not a version such as '1.1'") from None
        return value

    def installed(self) -> bool:
        """Whether its module can be imported here (found, not executed)."""
        try:
            return importlib.util.find_spec(self.module) is not None
        except ModuleNotFoundError:
            return False

    def compatible(self, api_version: str) -> bool:
        """Whether a release implementing plugin API `api_version` is new enough for it."""
        return Version(api_version) >= Version(self.min_api)


def read_entry(path: Path) -> CatalogEntry:
    """One catalog file; a wrong one is a ConfigError naming the file and the field."""
    try:
        return CatalogEntry.model_validate(tomllib.loads(path.read_text(encoding="utf-8")))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "(file)"
        raise ConfigError(f"{path}: field {field}: {first['msg']}") from None


def catalog(directory: Path | None = None) -> list[CatalogEntry]:
    """Every entry of the catalog (:data:`CATALOG_DIR` by default), by kind and name."""
    folder = directory or CATALOG_DIR
    entries = [read_entry(path) for path in sorted(folder.glob("*.toml"))]
    return sorted(entries, key=lambda entry: (entry.kind, entry.name))
