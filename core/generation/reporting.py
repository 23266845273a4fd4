"""A report model: the alignment model, the generator and the memory bank, loaded as one.

Checkpoint layout (what ``m3fm train`` writes for a ``generate`` recipe)::

    DIR/config.json               ReportModelConfig: generator architecture, default decoding
    DIR/model.safetensors         generator weights
    DIR/memory_bank.safetensors   training-text embeddings per language (the bridge's bank)
    DIR/align/                    the alignment checkpoint (image and text towers, tokenizer)
    DIR/metadata.json             recipe, data, provenance (written by the training loop)

    import m3fm
    model = m3fm.load("runs/zh/final")
    reports = model.generate(["scan.dcm"], modality="ct", lang="zh")
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from m3fm.alignment.model import MultiMedCLIP
from m3fm.checkpoint import load_model_weights
from m3fm.clinical.ood import OODDetector, load_for
from m3fm.embedding import Embedder, channels_last, computing_in
from m3fm.generation.bridge import MemoryBank, bridge
from m3fm.generation.config import DecodeConfig, GeneratorConfig
from m3fm.generation.model import MultiMedLM
from m3fm.generation.repetition import drop_repeated_clauses
from m3fm.registry import InputError, LanguageSpec, get_registry
from m3fm.safe_loading import check_checkpoint_folder
from m3fm.tokenizer import decode_report
from m3fm.validation import describe_validation_error

CONFIG_FILE = "config.json"
ALIGN_DIR = "align"
KIND = "m3fm-report-model"


class ReportModelConfig(BaseModel):
    """``config.json`` of a report-model checkpoint."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str = Field(KIND, pattern=f"^{KIND}$", description="Marks a report-model checkpoint.")
    generator: GeneratorConfig
    decode: DecodeConfig = Field(default_factory=DecodeConfig, description="Default decoding.")


def is_report_model(path: Path) -> bool:
    """Whether `path` looks like a report-model checkpoint (rather than an alignment one)."""
    return (Path(path) / ALIGN_DIR).is_dir()


def save_report_artifacts(
    directory: Path, align: MultiMedCLIP, config: ReportModelConfig, bank: MemoryBank,
    ood: OODDetector | None = None,
) -> None:
    """Everything of a report model but the generator weights, which the training loop saves;
    `ood` is the alignment checkpoint's description of its training images."""
    (directory / CONFIG_FILE).write_text(config.model_dump_json(indent=2))
    bank.save(directory)
    align.save_pretrained(directory / ALIGN_DIR)
    if ood is not None:
        ood.save(directory / ALIGN_DIR)


class ReportModel(Embedder):
    """Embeds like :class:`~m3fm.embedding.Embedder` and writes reports from images."""

    def __init__(
        self, align: MultiMedCLIP, generator: MultiMedLM, bank: MemoryBank,
        decode: DecodeConfig | None = None, device: str | torch.device | None = None,
        ood: OODDetector | None = None,
    ) -> None:
        super().__init__(align, device=device, ood=ood)
        self.generator = generator.to(self.device).eval()
        self.bank = bank
        self.decode = decode or DecodeConfig()

    @property
    def report_languages(self) -> tuple[str, ...]:
        """Languages this model writes reports in."""
        return self.generator.config.languages

    def generate(
        self, images: Sequence[str | Path | torch.Tensor], modality: str | None = None,
        lang: str = "en", decode: DecodeConfig | None = None,
    ) -> list[str]:
        """One report in `lang` per image file or preprocessed tensor."""
        self.generator.language_id(lang)  # refuse an unknown language before loading images
        modality = self.modality(modality)
        self.generator.modality_id(modality)
        embeddings = self.embed_images(images, modality=modality)
        return self.reports_from_embeddings(embeddings, lang, decode, modality=modality)

    def embed_images(self, images: Sequence[str | Path | torch.Tensor],
                     modality: str | None = None, batch_size: int = 32, **options
                     ) -> torch.Tensor:
        """As :meth:`Embedder.embed_images`, in the precision of the model's default decoding
        (`decode.precision`) unless `precision` is given."""
        options.setdefault("precision", self.decode.precision)
        return super().embed_images(images, modality, batch_size, **options)

    def reports_from_embeddings(
        self, embeddings: torch.Tensor, lang: str, decode: DecodeConfig | None = None,
        use_cache: bool = True, modality: str | None = None,
    ) -> list[str]:
        """Reports for `modality` image embeddings (N, D), bridged and decoded in batches.

        A generator conditioned on modality writes in `modality`'s style (one it does not
        know is a UsageError), or in no modality's (the `unknown` token) when it never saw
        `modality` reports in `lang`; clauses repeated within a report are then handled as
        `decode.repeated_clauses` says.
        """
        decode = decode or self.decode
        language = get_registry().language(lang)
        self.generator.modality_id(modality)  # refuse an unknown modality before decoding
        style = modality if self.bank.covers(modality, lang) else None
        reports = []
        for start in range(0, len(embeddings), decode.batch_size):
            batch = embeddings[start:start + decode.batch_size].to(self.device)
            points = bridge(batch, lang, decode, self.bank, modality)
            with computing_in(decode.precision, self.device, "decoder"):
                written = self.generator.generate(points, lang, decode, use_cache=use_cache,
                                                  modality=style)
            for ids in written:
                text = language.normalize(decode_report(self.generator.tokenizer, ids))
                cut_off = len(ids) >= self.generator.token_limit(decode)  # no [EOS] reached
                if cut_off:
                    text = without_unfinished_sentence(text, language)
                if decode.repeated_clauses != "keep":
                    text = drop_repeated_clauses(text, language)
                reports.append(text)
        return reports

    @classmethod
    def from_pretrained(
        cls, path: str | Path, device: str | torch.device | None = None, *, lean: bool = True
    ) -> ReportModel:
        """Load a report-model directory; missing or incompatible parts are one-line errors.

        Runs no code from the directory: see :mod:`m3fm.safe_loading`.  `lean` (the default):
        with the plain-torch networks of :mod:`m3fm.lean` where they cover the checkpoint,
        which give the same reports without importing `transformers` or `timm`; False: with
        the networks training uses.
        """
        path = Path(path)
        config_file = path / CONFIG_FILE
        if not is_report_model(path) or not config_file.is_file():
            raise InputError(f"{path}: not an m3fm report model (needs {CONFIG_FILE} and "
                             f"{ALIGN_DIR}/)")
        check_checkpoint_folder(path)
        try:
            config = ReportModelConfig.model_validate_json(config_file.read_text(encoding="utf-8"))
        except ValidationError as exc:
            raise InputError(
                f"{config_file}: incompatible config: {describe_validation_error(exc)}"
            ) from exc
        align = channels_last(MultiMedCLIP.from_pretrained(path / ALIGN_DIR, lean=lean))
        generator = MultiMedLM(config.generator, align.config.embed_dim, align.tokenizer,
                               lean=lean)
        load_model_weights(generator, path)
        bank = MemoryBank.load(path)
        missing = set(config.generator.languages) - set(bank.languages)
        if missing:
            raise InputError(f"{path}: the memory bank has no {', '.join(sorted(missing))}")
        return cls(align, generator, bank, config.decode, device=device,
                   ood=load_for(align, path / ALIGN_DIR))


def without_unfinished_sentence(text: str, language: LanguageSpec) -> str:
    """`text` without its last sentence (split by the language's rules), which a report cut
    off at the length limit leaves unfinished; a one-sentence report is kept as it is."""
    sentences = language.split_sentences(text)
    if len(sentences) < 2:
        return text
    return text[:text.rfind(sentences[-1])].rstrip()


def load(path: str | Path, device: str | torch.device | None = None, *, lean: bool = True
         ) -> Embedder:
    """Load a checkpoint directory: a :class:`ReportModel`, or an alignment-only Embedder
    (`lean`: see :meth:`ReportModel.from_pretrained`)."""
    if is_report_model(Path(path)):
        return ReportModel.from_pretrained(path, device=device, lean=lean)
    align = channels_last(MultiMedCLIP.from_pretrained(path, lean=lean))
    return Embedder(align, device=device, ood=load_for(align, Path(path)))
