"""m3fm-es: Spanish for m3fm, pivoted through English, and the COV-CTR data to train it.

Built only on m3fm's public plugin API, starting from `m3fm plugins new es --kind language`.
"""

from __future__ import annotations

from m3fm.registry import DatasetSpec, LanguageSpec, hookimpl

from . import dataset, language


@hookimpl
def m3fm_languages() -> list[LanguageSpec]:
    """Spanish."""
    return [language.SPEC]


@hookimpl
def m3fm_datasets() -> list[DatasetSpec]:
    """COV-CTR with Spanish reports."""
    return [dataset.SPEC]
