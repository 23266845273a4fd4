"""Reports for many input files: loaded and decoded in batches, one result per input.

An input that cannot be read becomes a result with its error, in its place; the others go on,
so a batch job never loses finished work to one bad file.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from m3fm.generation.config import DecodeConfig
from m3fm.generation.reporting import ReportModel
from m3fm.imaging import preprocess
from m3fm.registry import M3fmError, get_registry


def report_inputs(
    model: ReportModel, inputs: Sequence[Path], *, modality: str, lang: str,
    decode: DecodeConfig | None = None,
) -> Iterator[dict[str, str]]:
    """Yield ``{"input", "modality", "language", "report"}`` or ``{"input", "error"}`` per input,
    in input order, a batch (``decode.batch_size``) at a time.

    A modality or language the model lacks is refused here, before any input is read.
    """
    decode = decode or model.decode
    modality = model.modality(modality)
    model.generator.language_id(lang)
    return _reports(model, inputs, modality, lang, decode)


def _reports(
    model: ReportModel, inputs: Sequence[Path], modality: str, lang: str, decode: DecodeConfig
) -> Iterator[dict[str, str]]:
    spec = get_registry().modality(modality)
    for start in range(0, len(inputs), decode.batch_size):
        chunk = inputs[start:start + decode.batch_size]
        results: dict[Path, dict[str, str]] = {}
        loaded = {}
        for path in chunk:
            try:
                loaded[path] = preprocess(spec, path)
            except M3fmError as exc:
                results[path] = {"input": str(path), "error": str(exc)}
        if loaded:
            reports = model.generate(list(loaded.values()), modality, lang, decode)
            for path, report in zip(loaded, reports, strict=True):
                results[path] = {"input": str(path), "modality": modality, "language": lang,
                                 "report": report}
        for path in chunk:
            yield results[path]
