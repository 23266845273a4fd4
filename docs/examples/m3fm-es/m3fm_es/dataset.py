"""The `cov-ctr-es` data set format: a COV-CTR folder read as it is, plus Spanish reports.

It reads the original files through the installed `cov-ctr` reader and adds, for each English
report the clause table fully covers, a Spanish record in the same ``group`` (so it is an
English–Spanish parallel pair for the pivot) with the same image, split and labels.  It is
chosen by name (``format = "cov-ctr-es"``), never detected, because it reads the same folder
as `cov-ctr`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from m3fm.registry import DatasetSpec, ReadResult, get_registry

from .translation import ClauseTranslator

log = logging.getLogger(__name__)


def read(path: Path) -> ReadResult:
    """COV-CTR's records and the Spanish translations of the English ones that can be made."""
    original = get_registry().dataset("cov-ctr").read(path)
    translator = ClauseTranslator()
    english = [record for record in original.records if record.language == "en"]
    spanish = []
    for record in english:
        text = translator.translate(record.report)
        if text is not None:
            spanish.append(record.model_copy(
                update={"language": "es", "report": text, "id": f"{record.id}-es"}))
    log.info("cov-ctr-es: %d of %d English reports translated", len(spanish), len(english))
    return ReadResult(records=original.records + tuple(spanish), problems=original.problems)


SPEC = DatasetSpec(
    name="cov-ctr-es",
    description="COV-CTR with Spanish reports built from hand-translated clauses",
    detect=lambda path: False,
    read=read,
)
