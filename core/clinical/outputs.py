"""The files `m3fm run --sr/--fhir/--heatmaps` writes per input, beside its JSON result.

:class:`ClinicalOutputs` is an :data:`m3fm.analysis.ResultHook`: it sees each finished result
with its preprocessed input, writes the files asked for, and records them in the result
(``"files": {"sr": ..., "fhir": ..., "heatmaps": [...]}``), so the JSON Lines output says
where each input's files are.  What an input cannot have is said per input in ``"notes"`` (a
PNG gets no DICOM SR; a DICOM file whose header a writer cannot use gets a note, not a crash),
and the other inputs go on.  A folder that cannot be written stops the run before the model
loads (:meth:`ClinicalOutputs.check`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from m3fm.analysis import Analysis
from m3fm.clinical.captures import write_secondary_captures
from m3fm.clinical.fhir import write_fhir
from m3fm.clinical.heatmaps import overlays, write_heatmaps
from m3fm.clinical.identity import ModelIdentity, model_identity
from m3fm.clinical.saliency import label_directions, saliency_maps
from m3fm.clinical.sr import dicom_headers, write_sr
from m3fm.diagnosis.zeroshot import PromptClassifier
from m3fm.embedding import Embedder
from m3fm.models import default_model_dir
from m3fm.outputs import OutputError, shown_path

__all__ = ["ClinicalOutputs"]

WRITER_FAULTS = (ValueError, TypeError, AttributeError, KeyError, IndexError)
"""What a writer raises on a DICOM header it cannot use (a missing or malformed attribute):
that input gets a note, the others their files."""


@dataclass
class ClinicalOutputs:
    """Where to write DICOM SRs, FHIR DiagnosticReports and heatmaps (None: not asked)."""

    sr: Path | None = None
    fhir: Path | None = None
    heatmaps: Path | None = None
    _model: Embedder | None = field(default=None, repr=False)
    _analysis: Analysis | None = field(default=None, repr=False)
    _identity: ModelIdentity | None = field(default=None, repr=False)
    _classifier: PromptClassifier | None = field(default=None, repr=False)

    def check(self) -> None:
        """Create the folders asked for, refusing ones that cannot be written, at once."""
        for option, folder in self._folders():
            if folder.exists() and not folder.is_dir():
                raise OutputError(f"{option} {shown_path(folder)} is a file; give a folder")
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise OutputError(f"{option} {shown_path(folder)}: cannot create it: "
                                  f"{error.strerror}") from None
            if not os.access(folder, os.W_OK):
                raise OutputError(f"{option} {shown_path(folder)} is not writable")

    def start(self, model: Embedder, analysis: Analysis, model_dir: Path | None) -> None:
        """Bind the model loaded from `model_dir` (None: the bundled one); label prompts for
        heatmaps are embedded once, here."""
        self._model, self._analysis = model, analysis
        self._identity = model_identity(model_dir or default_model_dir())
        if self.heatmaps is not None and analysis.labels:
            self._classifier = PromptClassifier(model, analysis.labels,
                                                model.language(analysis.lang))

    def __call__(self, result: dict[str, object], image: torch.Tensor) -> None:
        """Write `result`'s files and note them (or why there are none) in the result."""
        source = Path(str(result["input"]))
        files: dict[str, object] = {}
        notes: list[str] = []
        headers = dicom_headers(source) if self.sr or self.fhir or self.heatmaps else []
        if self.sr is not None:
            if headers:
                self._write("sr", "--sr", self.sr, files, notes,
                            lambda: write_sr(result, headers, self._identity, self.sr))
            else:
                notes.append("no DICOM SR: the input is not DICOM")
        if self.fhir is not None:
            self._write("fhir", "--fhir", self.fhir, files, notes,
                        lambda: write_fhir(result, headers, self._identity, self.fhir))
        if self.heatmaps is not None:
            self._write("heatmaps", "--heatmaps", self.heatmaps, files, notes,
                        lambda: self._heatmaps(result, image, source, headers))
        if files:
            result["files"] = files
        if notes:
            result["notes"] = notes

    def _heatmaps(self, result: dict[str, object], image: torch.Tensor, source: Path,
                  headers: list) -> list[str]:
        """One map per scored label and one for the report, each as a PNG overlay and, for a
        DICOM slice, as a Secondary Capture in its study."""
        analysis, model = self._analysis, self._model
        targets = label_directions(self._classifier) if self._classifier is not None else {}
        if "report" in result:
            targets["report"] = model.embed_texts([str(result["report"])], analysis.lang)[0]
        if not targets:
            return []
        maps = saliency_maps(model, image, analysis.modality, targets)
        written = write_heatmaps(image, maps, source, self.heatmaps)
        if image.ndim == 3:  # one slice (C, H, W): a volume or series is reoriented first
            written += write_secondary_captures(overlays(image, maps), headers, self._identity,
                                                source, self.heatmaps)
        return [str(path) for path in written]

    @staticmethod
    def _write(key: str, option: str, folder: Path, files: dict, notes: list[str],
               write) -> None:
        try:
            written = write()
        except OSError as error:
            raise OutputError(f"{option} {shown_path(folder)}: writing failed "
                              f"({error.strerror or type(error).__name__}); the files "
                              "written before are kept") from None
        except WRITER_FAULTS as error:
            notes.append(f"no {key}: {' '.join(str(error).split())[:200]}")
            return
        files[key] = written if isinstance(written, list) else str(written)

    def _folders(self) -> list[tuple[str, Path]]:
        return [(option, folder) for option, folder in
                (("--sr", self.sr), ("--fhir", self.fhir), ("--heatmaps", self.heatmaps))
                if folder is not None]
