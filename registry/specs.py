"""The spec types a plugin returns from its hooks.

Specs are frozen pydantic models: they validate what a plugin declares when it is loaded, so a
mistake in a third-party package is reported against that package instead of surfacing later
as a confusing failure deep inside training.  Callables (loaders, encoder factories, text
functions) are plain Python callables; their contracts are documented on each field.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

Name = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]*$", max_length=40)]
"""A plugin-provided name: lower-case ASCII, digits, ``-`` and ``_``, starting with a letter."""

LabelId = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$", max_length=60)]
"""A diagnosis label identifier shared by modality and language plugins, e.g. ``covid19``."""


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)


class Finding(_Spec):
    """One finding a report states, as a language plugin's finding extractor reads it.

    Findings are compared between a generated and a reference report to score clinical
    efficacy, so they carry only what both reports can be held to: which finding, whether it is
    asserted or denied, and where.  Frozen, hence hashable: a report's findings form a set.
    """

    label: LabelId = Field(
        description="The finding, as a label id shared with modality plugins, e.g. `nodule`."
    )
    present: bool = Field(
        description='True when the report states the finding; False when it explicitly '
        'negates it ("no pleural effusion", "未见胸腔积液").'
    )
    side: Literal["left", "right", "both"] | None = Field(
        None, description="Which lung or hemithorax, if the report says; `both` = bilateral."
    )
    lobe: Literal["upper", "middle", "lower"] | None = Field(
        None, description="Which lobe, if the report says (the lingula counts as upper)."
    )


class LabelPrompts(_Spec):
    """Sentences that state a label present or absent, written the way reports describe it.

    Zero-shot diagnosis compares an image with these sentences, so they must use the words the
    alignment model's reports use.  A name in a template ("COVID-19 pneumonia") works only when
    reports name the disease; COV-CTR's never do, they describe its signs (ground-glass
    shadows), so a language plugin can describe such a label here instead.
    """

    positive: tuple[str, ...] = Field(
        min_length=1, description="Sentences stating the label is present."
    )
    negative: tuple[str, ...] = Field(
        min_length=1, description="Sentences stating it is absent, parallel to `positive`."
    )


ANCHOR_LANGUAGE = "en"
"""The language every other one is aligned through: every label has prompts in it, so a
language without its own prompts for a label can fall back on them."""


class LabelSpec(_Spec):
    """A diagnosis label as a plugin entry: which modalities it applies to and its prompts.

    Any plugin may return labels from ``m3fm_labels()``: a modality package ships the labels of
    its domain with English prompts; a language package adds prompts in its language for any
    label id.  The registry merges the entries of one id from all plugins (since plugin API 1.5).
    """

    id: LabelId = Field(description="The label id, e.g. `covid19`, shared by all plugins.")
    modalities: tuple[Name, ...] = Field(
        (), description="Modality names the label applies to; empty = any modality."
    )
    description: str = Field("", description="One line saying what the label means.")
    prompts: dict[Name, LabelPrompts] = Field(
        description="Prompts per language code, at least the anchor language (`en`); a "
        "language plugin adds its own for any label with `LanguageSpec.label_prompts`, or with a "
        "LabelSpec of the same id whose `en` prompts are the same."
    )

    @field_validator("description")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if "\n" in value.strip():
            raise ValueError("the description must be one line")
        return value.strip()

    @field_validator("prompts")
    @classmethod
    def _has_prompts(cls, value: dict[str, LabelPrompts]) -> dict[str, LabelPrompts]:
        if ANCHOR_LANGUAGE not in value:
            raise ValueError(f"prompts must include the anchor language {ANCHOR_LANGUAGE!r}, "
                             "which every other language can fall back on")
        return value


class EncoderOptions(BaseModel):
    """How to build a modality's image encoder.

    Random initialisation is the default so that nothing is downloaded unless asked for.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    backbone: str | None = Field(
        None,
        description="Backbone name (a timm model name for 2D encoders); None = plugin default.",
    )
    pretrained: bool = Field(
        False,
        description="Load pretrained weights: from `weights` if given, else from the model hub.",
    )
    weights: Path | None = Field(
        None,
        description="Local weights file (.safetensors/.bin/.pth) used when `pretrained` is set.",
    )
    for_inference: bool = Field(
        False,
        description="Built only to run weights loaded from a checkpoint, never trained: the "
        "plugin may return a lighter module with the same parameters and outputs (m3fm's "
        "`timm_encoder` then builds the ResNets it covers without importing timm).",
    )


class ModalitySpec(_Spec):
    """An imaging domain (chest X-ray, CT, ...): how to read its files and encode them."""

    name: Name = Field(description="Name used on the command line, e.g. `ct`.")
    description: str = Field(description="One line for `m3fm plugins list`.")
    file_types: tuple[str, ...] = Field(
        description="Accepted file suffixes, lower case with the dot, e.g. `.png`, `.nii.gz`."
    )
    accepts_directories: bool = Field(
        False, description="Whether a folder is one input (e.g. a DICOM series)."
    )
    slice_shape: tuple[int, int, int] = Field(
        description="(C, H, W) of a preprocessed 2D input."
    )
    volume_shape: tuple[int, int, int, int] | None = Field(
        None,
        description="(C, D, H, W) of a preprocessed 3D input; None if the modality is 2D only.",
    )
    load: Callable[[Path], Any] = Field(
        description="Read one file or folder and preprocess it into a float32 torch tensor of "
        "`slice_shape` (2D inputs) or `volume_shape` (3D inputs). May raise any exception on "
        "unreadable input; the engine reports it as an InputError naming the file."
    )
    build_encoder: Callable[[EncoderOptions], Any] = Field(
        description="Build a torch.nn.Module mapping a batch (B, *slice_shape) — and "
        "(B, *volume_shape) if 3D is supported — to features (B, F); it exposes `feature_dim` (F)."
    )
    labels: tuple[LabelId, ...] = Field(
        description="Default label set for diagnosis, as label ids; labels that `m3fm_labels()` "
        "entries declare for the modality are added to it (since plugin API 1.5)."
    )
    sample_files: tuple[Path, ...] = Field(
        (),
        description="A few real files (or folders) of a declared type, usually shipped as "
        "package data, on which `m3fm plugins list` runs the conformance kit; without them it "
        "checks only what needs no file (optional since plugin API 1.3).",
    )
    dicom_modalities: tuple[str, ...] = Field(
        (),
        description="DICOM Modality (0008,0060) codes the plugin reads, e.g. `('CT',)`; the "
        "engine refuses a DICOM file or series whose tag names another modality and points to "
        "the plugins that declare it. Empty = any modality. Pictures and NIfTI files have no "
        "modality tag, so they are never checked (optional since plugin API 1.4).",
    )
    augment: Callable[[Any, Any], Any] | None = Field(
        None,
        description="Training augmentation `augment(image, generator)`: takes one preprocessed "
        "input as `load` returns it, a slice (C, H, W) or a volume (C, D, H, W), and a "
        "torch.Generator, and returns a new tensor of the same shape and dtype. It draws all "
        "its randomness from the generator (the engine seeds it per epoch, step and pair, so "
        "training resumes exactly) and never changes its input in place. Alignment training "
        "applies it when `data.augment` is on; None = a random crop of 2D inputs (optional "
        "since plugin API 1.6).",
    )

    @field_validator("file_types")
    @classmethod
    def _suffixes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for suffix in value:
            if not suffix.startswith(".") or suffix != suffix.lower():
                raise ValueError(f"file type {suffix!r} must be a lower-case suffix such as '.png'")
        return value

    @field_validator("dicom_modalities")
    @classmethod
    def _modality_codes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for code in value:
            if not re.fullmatch(r"[A-Z0-9_]{1,16}", code):
                raise ValueError(f"{code!r} is not a DICOM Modality code such as 'CT' or 'DX' "
                                 "(upper-case letters, digits and '_', at most 16)")
        return value

    @property
    def dims(self) -> tuple[int, ...]:
        """Spatial dimensionalities the modality handles: (2,) or (2, 3)."""
        return (2, 3) if self.volume_shape else (2,)

    def accepts(self, path: str | Path) -> bool:
        """Whether `path` has a file type (or is a folder) this modality reads."""
        path = Path(path)
        if path.is_dir():
            return self.accepts_directories
        name = path.name.lower()
        return any(name.endswith(suffix) for suffix in self.file_types)


class LanguageSpec(_Spec):
    """A report language: text handling, metric tokenisation and diagnosis prompts."""

    code: Name = Field(description="Language code used on the command line, e.g. `zh`.")
    name: str = Field(description="Human name, e.g. `Chinese`.")
    pivot: Name | None = Field(
        description="Language this one is aligned through (`en` for most); None for the anchor."
    )
    normalize: Callable[[str], str] = Field(
        description="Clean a raw report (placeholders, list numbering, punctuation). Idempotent."
    )
    split_sentences: Callable[[str], list[str]] = Field(
        description="Split a normalised report into sentences."
    )
    tokenize_words: Callable[[str], list[str]] = Field(
        description="Split normalised text into words (jieba for Chinese)."
    )
    join_words: Callable[[list[str]], str] = Field(
        description="Inverse of `tokenize_words`: turn words back into readable text, exactly: "
        "`join_words(tokenize_words(t)) == t` for every normalised report `t` (the conformance "
        "kit checks it on `sample_reports` after `normalize`)."
    )
    metric_tokenizer: str = Field(
        description="sacrebleu tokenizer name used for BLEU, e.g. `13a` or `zh`."
    )
    finding_names: dict[LabelId, str] = Field(
        description="Label id to the finding's name in this language, used to fill prompts."
    )
    positive_templates: tuple[str, ...] = Field(
        description="Prompts stating a finding is present; each contains `{finding}`."
    )
    negative_templates: tuple[str, ...] = Field(
        description="Prompts stating a finding is absent; each contains `{finding}`."
    )
    label_prompts: dict[LabelId, LabelPrompts] = Field(
        default_factory=dict,
        description="Descriptive prompts for labels whose name is not how reports describe "
        "them; they replace the templates for that label (optional since plugin API 1.2).",
    )
    parallel_sentences: tuple[tuple[str, str], ...] = Field(
        (),
        description="(pivot-language sentence, this language's sentence) pairs the plugin "
        "ships, e.g. a domain's wording that the data sets' parallel reports never use; "
        "alignment recipes with `data.plugin_sentences` add them to the pivot pairs "
        "(optional since plugin API 1.3).",
    )
    sample_reports: tuple[str, ...] = Field(
        (),
        description="A few typical raw reports in this language, on which `m3fm plugins list` "
        "runs the conformance kit; without them it uses the plugin's own prompt sentences "
        "(optional since plugin API 1.3).",
    )
    extract_findings: Callable[[str], list[Finding]] | None = Field(
        None,
        description="Read the findings a radiology report (raw or normalised) states or "
        "negates, with side and lobe where given; label ids are keys of `finding_names`. "
        "Used for clinical-efficacy scores. None: the language offers no extractor "
        "(optional since plugin API 1.1, so plugins written for 1.0 stay valid).",
    )

    @field_validator("positive_templates", "negative_templates")
    @classmethod
    def _has_slot(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one template is required")
        for template in value:
            if "{finding}" not in template:
                raise ValueError(f"template {template!r} lacks the '{{finding}}' slot")
        return value

    @model_validator(mode="after")
    def _not_own_pivot(self) -> LanguageSpec:
        if self.pivot == self.code:
            raise ValueError(f"language {self.code!r} cannot pivot through itself")
        return self

    def prompts(self, label: str) -> tuple[list[str], list[str]]:
        """Positive and negative prompts for `label`, in this language: its `label_prompts`
        when the plugin describes the label, else every template filled with its name.  The
        engine asks ``PluginRegistry.label_prompts``, which puts a label's own prompts
        (``m3fm_labels()``) first and falls back on the anchor language."""
        from .errors import UnknownNameError  # local: keeps the spec module import-light

        if label in self.label_prompts:
            described = self.label_prompts[label]
            return list(described.positive), list(described.negative)
        if label not in self.finding_names:
            raise UnknownNameError(f"label for language {self.code!r}:", label,
                                   sorted({*self.finding_names, *self.label_prompts}),
                                   listed_as="it names")
        finding = self.finding_names[label]
        return (
            [t.format(finding=finding) for t in self.positive_templates],
            [t.format(finding=finding) for t in self.negative_templates],
        )


class Record(_Spec):
    """One image–report pair, or one report alone (``image`` is None), from any data set."""

    id: str = Field(description="Unique within the data set and split.")
    dataset: str = Field(description="Name of the dataset format that produced the record.")
    split: str = Field(description="`train`, `val`, `test` or a user-defined split.")
    modality: Name | None = Field(description="Imaging domain the report describes, if known.")
    image: Path | None = Field(
        description="Absolute path of the image file or folder; None for text only."
    )
    language: Name = Field(description="Language code of `report`.")
    report: str = Field(description="The report text as published (not normalised).")
    labels: dict[LabelId, int] = Field(
        default_factory=dict,
        description="Known labels, 1 = present, 0 = absent; missing = unknown.",
    )
    group: str | None = Field(
        None, description="Records sharing a group describe the same image (parallel reports)."
    )
    patient: str | None = Field(None, description="Patient identifier, for patient-level splits.")
    source: str = Field(
        description="Where the record came from: `file:line` or `file:split[index]`."
    )
    meta: dict[str, str] = Field(default_factory=dict, description="Extra columns worth keeping.")


class RowProblem(_Spec):
    """A row that could not be turned into a record, and why."""

    source: str = Field(description="`file:line` or `file:split[index]`.")
    message: str


class ReadResult(_Spec):
    """What a dataset reader returns: the usable records and every row it had to leave out."""

    records: tuple[Record, ...]
    problems: tuple[RowProblem, ...] = ()


class DatasetSpec(_Spec):
    """A named reader for a data set format (a public one, or a generic manifest)."""

    name: Name = Field(description="Format name used with `--format`, e.g. `cov-ctr`.")
    description: str
    detect: Callable[[Path], bool] = Field(
        description="Whether a path (folder or file) holds data in this format; must not raise."
    )
    read: Callable[[Path], ReadResult] = Field(
        description="Read every split of the data set at a path. Raises DataFormatError when the "
        "data set as a whole is unreadable; reports bad rows in ReadResult.problems."
    )
