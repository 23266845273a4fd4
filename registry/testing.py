"""Conformance kit: check a plugin's spec against the contract, with messages that say what to fix.

Call these from your plugin's tests (the `m3fm plugins new` scaffold does)::

    from m3fm.registry.testing import check_language, check_modality

    def test_my_language_conforms():
        check_language(SPEC, samples=["A sample report.", "Another one."])

    def test_my_modality_conforms(tmp_path):
        check_modality(SPEC, samples=[path_to_a_real_file], scratch=tmp_path)

Each function runs its checks in order and raises :class:`ConformanceError` at the first that
fails, naming the check and the fix (an exception raised by the plugin's own code fails the
check it was raised in); it returns the names of the checks passed.  :func:`first_failure` runs
the kit on the inputs a spec ships itself (`LanguageSpec.sample_reports`,
`ModalitySpec.sample_files`) and returns the failure instead of raising: ``m3fm plugins list``
shows it as the plugin's status.  The engine is imported inside the functions, so this module
keeps the registry's import-light layering.

Labels (``m3fm_labels()``, plugin API 1.5) have :func:`check_label` for one entry and
:func:`label_coverage` for what the installed plugins provide together: a label no language can
prompt for fails, while a language lacking its own prompts for a label is only a warning, since
diagnosis in it falls back on the anchor language's prompts.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from m3fm.registry import (
    ANCHOR_LANGUAGE,
    EncoderOptions,
    LabelSpec,
    LanguageSpec,
    M3fmError,
    ModalitySpec,
    PluginError,
    get_registry,
)

__all__ = [
    "ConformanceError",
    "check_label",
    "check_language",
    "check_modality",
    "first_failure",
    "label_coverage",
]


class ConformanceError(AssertionError):
    """A plugin breaks the contract: which check, what was found, and how to fix it."""

    def __init__(self, check: str, problem: str, fix: str) -> None:
        self.check = check
        self.problem = problem
        self.fix = fix
        super().__init__(f"{check}: {problem}; {fix}")


@contextmanager
def _check(name: str, fix: str) -> Iterator[None]:
    """Run plugin code for check `name`; an exception it raises fails that check, with `fix`."""
    try:
        yield
    except ConformanceError:
        raise
    except PluginError as exc:  # plugin code that tried to end the process says so itself
        raise ConformanceError(name, str(exc), fix) from exc
    except Exception as exc:  # anything the plugin's code raises
        lines = str(exc).strip().splitlines()
        detail = f": {lines[0][:200]}" if lines else ""
        raise ConformanceError(name, f"raised {type(exc).__name__}{detail}", fix) from exc


def check_language(spec: LanguageSpec, samples: Sequence[str]) -> list[str]:
    """Check a language plugin on sample reports written in it (at least one)."""
    if not samples:
        raise ConformanceError("samples", "no sample reports given",
                               "pass a few typical reports of the language")
    return _check_text(spec, samples) + _check_metric_and_prompts(spec)


def _check_text(spec: LanguageSpec, samples: Sequence[str]) -> list[str]:
    """The checks of the text functions, on each sample."""
    for text in samples:
        with _check("normalize is idempotent", "make `normalize` accept any report text"):
            once = spec.normalize(text)
            twice = spec.normalize(once)
        if twice != once:
            raise ConformanceError(
                "normalize is idempotent", f"normalising {once!r} again changes it",
                "make `normalize` a fixed point: normalize(normalize(x)) == normalize(x)")
        with _check("join_words inverts tokenize_words",
                    "make `tokenize_words` and `join_words` accept normalised text"):
            words = spec.tokenize_words(once)
            joined = spec.join_words(words)
        if joined != once:
            raise ConformanceError(
                "join_words inverts tokenize_words", f"{once!r} → {words!r} → {joined!r}",
                "make join_words(tokenize_words(x)) == x for normalised text")
        with _check("split_sentences", "make `split_sentences` accept normalised text"):
            sentences = spec.split_sentences(once)
        if once.strip() and not sentences:
            raise ConformanceError("split_sentences", f"no sentence found in {once!r}",
                                   "return at least one sentence for non-empty text")
    return ["normalize is idempotent", "join_words inverts tokenize_words", "split_sentences"]


def _check_metric_and_prompts(spec: LanguageSpec) -> list[str]:
    """The checks that need no sample: the BLEU tokenizer exists, every label has prompts."""
    import sacrebleu

    try:
        sacrebleu.BLEU(tokenize=spec.metric_tokenizer)
    except KeyError:
        raise ConformanceError(
            "metric tokenizer", f"sacrebleu has no tokenizer {spec.metric_tokenizer!r}",
            "set `metric_tokenizer` to a sacrebleu name such as '13a', 'intl', 'zh' or 'char'",
        ) from None
    for label in sorted({*spec.finding_names, *spec.label_prompts}):
        with _check("prompts", "make every template a sentence with only the '{finding}' slot"):
            positive, negative = spec.prompts(label)
        if not positive or not negative or not all(p.strip() for p in positive + negative):
            raise ConformanceError(
                "prompts", f"label {label!r} has an empty positive or negative prompt",
                "give every label in `finding_names` or `label_prompts` non-empty sentences")
    return ["metric tokenizer", "prompts"]


def _prompt_sentences(spec: LanguageSpec) -> list[str]:
    """Every prompt sentence of the language: its stand-in samples when it ships no reports."""
    sentences: list[str] = []
    for label in sorted({*spec.finding_names, *spec.label_prompts}):
        with _check("prompts", "make every template a sentence with only the '{finding}' slot"):
            positive, negative = spec.prompts(label)
        sentences += [*positive, *negative]
    return sentences


def check_modality(spec: ModalitySpec, samples: Sequence[str | Path], scratch: str | Path,
                   options: EncoderOptions | None = None) -> list[str]:
    """Check a modality plugin on real sample files of its declared types (at least one);
    `scratch` is a writable folder for a deliberately corrupt file.  Paths may be `str` or
    `Path`; `load` receives each sample as a `Path`."""
    if not samples:
        raise ConformanceError("samples", "no sample files given",
                               "pass at least one real file of a declared type")
    batches = _check_load(spec, samples)
    return [
        *_LOAD_CHECKS, *_check_augment(spec, batches), *_check_encoder(spec, batches, options),
        *_check_corrupt_file(spec, scratch),
    ]


_LOAD_CHECKS = ["file types", "load", "load returns float32", "load shape"]


def _check_load(spec: ModalitySpec, samples: Sequence[str | Path]) -> dict[tuple[int, ...], Any]:
    """Load every sample; return one batch of two per shape the samples have."""
    import torch

    shapes = {spec.slice_shape, *([spec.volume_shape] if spec.volume_shape else [])}
    batches = {}
    for path in map(Path, samples):
        if not spec.accepts(path):
            raise ConformanceError("file types", f"{path.name} is not a declared type",
                                   f"add its suffix to `file_types` {spec.file_types}")
        try:
            image = spec.load(path)
        except Exception as exc:  # the plugin's own failure on a file it should read
            raise ConformanceError("load", f"{path.name} could not be read: {exc}",
                                   "make `load` read every sample of a declared type") from exc
        if not isinstance(image, torch.Tensor) or image.dtype != torch.float32:
            raise ConformanceError("load returns float32", f"{path.name} gave {type(image)}"
                                   f"{getattr(image, 'dtype', '')}",
                                   "return a float32 torch tensor from `load`")
        if tuple(image.shape) not in shapes:
            raise ConformanceError("load shape", f"{path.name} gave {tuple(image.shape)}",
                                   f"resize to a declared shape {sorted(shapes)}")
        batches.setdefault(tuple(image.shape), torch.stack([image, image]))
    return batches


def _check_augment(spec: ModalitySpec, batches: dict[tuple[int, ...], Any]) -> list[str]:
    """When the spec declares `augment`, run it on one loaded input of each shape: same shape
    and dtype, its input unchanged, the same output from two generators of one seed, and (for
    an input that is not constant) another output for another seed."""
    import torch

    if spec.augment is None:
        return []

    def augmented(image: Any, seed: int) -> Any:
        fix = "make `augment(image, generator)` work on every image `load` returns"
        with _check("augment", fix):
            return spec.augment(image, torch.Generator().manual_seed(seed))

    for shape, batch in batches.items():
        image = batch[0].clone()
        original = image.clone()
        first = augmented(image, 0)
        if not isinstance(first, torch.Tensor) or tuple(first.shape) != shape \
                or first.dtype != image.dtype:
            got = (f"{tuple(first.shape)} {first.dtype}" if isinstance(first, torch.Tensor)
                   else type(first).__name__)
            raise ConformanceError("augment", f"a {shape} {image.dtype} input gave {got}",
                                   "return a new tensor of the input's shape and dtype")
        if not torch.equal(image, original):
            raise ConformanceError("augment", f"it changed its {shape} input in place",
                                   "compute on a copy: never modify the input tensor")
        if not torch.equal(first, augmented(image, 0)):
            raise ConformanceError(
                "augment", f"two generators seeded alike gave different {shape} outputs",
                "draw every random number from the `generator` argument (torch.rand(..., "
                "generator=generator)), never from global random state")
        others = [augmented(image, seed) for seed in (1, 2, 3)]
        if image.amax() > image.amin() and all(torch.equal(first, other) for other in others):
            raise ConformanceError(
                "augment", f"seeds 0 to 3 gave the same {shape} output",
                "draw the augmentation's parameters from the `generator` argument")
    return ["augment"]


def _zeros_batches(spec: ModalitySpec) -> dict[tuple[int, ...], Any]:
    """A batch of two blank inputs per declared shape, for a modality without sample files."""
    import torch

    shapes = [spec.slice_shape, *([spec.volume_shape] if spec.volume_shape else [])]
    return {shape: torch.zeros(2, *shape) for shape in shapes}


def _check_encoder(spec: ModalitySpec, batches: dict[tuple[int, ...], Any],
                   options: EncoderOptions | None = None) -> list[str]:
    """Build the encoder and check its features on each batch (two inputs of one shape)."""
    import torch

    with _check("encoder builds", "make `build_encoder` work with default EncoderOptions"):
        encoder = spec.build_encoder(options or EncoderOptions())
    if not isinstance(getattr(encoder, "feature_dim", None), int):
        raise ConformanceError("encoder feature_dim", "the encoder has no integer `feature_dim`",
                               "set `feature_dim` on the module `build_encoder` returns")
    for shape, batch in batches.items():
        fix = f"map (B, *{shape}) to (B, feature_dim={encoder.feature_dim})"
        with _check("encoder output", fix), torch.no_grad():
            encoder.eval()
            features = encoder(batch)
        got = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features)
        if got != (2, encoder.feature_dim):
            raise ConformanceError(
                "encoder output", f"a batch of 2 × {shape} gave {got}", fix)
    return ["encoder builds", "encoder feature_dim", "encoder output"]


def _check_corrupt_file(spec: ModalitySpec, scratch: str | Path) -> list[str]:
    """`load` must raise on a deliberately corrupt file of the first declared type.

    `load` is called directly: `preprocess` refuses such a file from its header before the
    plugin sees it when m3fm knows the file type, which would hide a lenient `load`.
    """
    suffix = spec.file_types[0] if spec.file_types else ".bin"
    corrupt = Path(scratch) / f"corrupt{suffix}"
    corrupt.write_bytes(b"not an image, deliberately")
    try:
        spec.load(corrupt)
    except PluginError as error:  # the engine copes; the plugin is wrong
        raise ConformanceError("corrupt file", str(error),
                               "raise an Exception from `load`, never exit") from error
    except Exception:  # what `preprocess` reports as an InputError naming the file
        pass
    else:
        raise ConformanceError("corrupt file", f"{corrupt.name} loaded without error",
                               "let `load` raise on unreadable input")
    return ["corrupt file"]


def first_failure(kind: str, spec: Any, scratch: str | Path) -> ConformanceError | None:
    """The first check a provided spec fails on the inputs it ships, or None if it passes.

    A language is checked on its `sample_reports`, or on its own prompt sentences when it
    ships none.  A modality is checked on its `sample_files` with :func:`check_modality`;
    without them, only what needs no file: the encoder (on blank batches of the declared
    shapes) and the corrupt-file check.  Dataset formats are not checked.  `scratch` is a
    writable folder.  Used by ``m3fm plugins list``; never raises for a plugin's fault.
    """
    try:
        if kind == "language":
            samples = spec.sample_reports or _prompt_sentences(spec)
            _check_text(spec, samples)
            _check_metric_and_prompts(spec)
        elif kind == "modality":
            if spec.sample_files:
                check_modality(spec, spec.sample_files, scratch)
            else:
                _check_encoder(spec, _zeros_batches(spec))
                _check_corrupt_file(spec, scratch)
    except ConformanceError as error:
        return error
    except Exception as exc:  # plugin code outside any single check: still the plugin's fault
        return ConformanceError("conformance kit", f"raised {type(exc).__name__}: {exc}",
                                "run the kit in the plugin's tests to find where")
    return None


def check_label(spec: LabelSpec) -> list[str]:
    """Check one label entry: prompts in the anchor language, and no empty sentence."""
    if ANCHOR_LANGUAGE not in spec.prompts:
        raise ConformanceError(
            "label prompts", f"label {spec.id!r} has no {ANCHOR_LANGUAGE!r} prompts",
            f"give every label prompts in the anchor language {ANCHOR_LANGUAGE!r}")
    for lang, given in spec.prompts.items():
        if not all(sentence.strip() for sentence in (*given.positive, *given.negative)):
            raise ConformanceError(
                "label prompts", f"label {spec.id!r} has an empty {lang!r} prompt",
                "give every prompt a sentence stating the label present or absent")
    return ["label prompts"]


def label_coverage(registry: Any = None) -> list[str]:
    """Check that every label of every installed modality can be prompted (else
    :class:`ConformanceError`), and return the missing translations as warnings: one line per
    label and installed language that has no prompts of its own for it (diagnosis in that
    language uses the anchor language's prompts).  `registry`: default, the installed plugins.
    """
    registry = registry or get_registry()
    languages = [code for code in registry.names("language")
                 if len(registry.providers("language", code)) == 1]
    warnings = []
    for modality in registry.names("modality"):
        if len(registry.providers("modality", modality)) != 1:
            continue  # a name conflict is reported as such
        for label in registry.modality_labels(modality):
            if label in registry.label_ids():
                with _check("label prompts", "make the label's entries agree, or uninstall one"):
                    check_label(registry.label(label))
            used = {}
            for lang in languages:
                try:
                    used[lang] = registry.label_prompts(label, lang)[2]
                except M3fmError:
                    continue
            if not used:
                raise ConformanceError(
                    "label coverage", f"label {label!r} of modality {modality!r} has no prompts "
                    "in any installed language",
                    f"declare it with `m3fm_labels()` and {ANCHOR_LANGUAGE!r} prompts")
            warnings += [
                f"label {label!r} ({modality}) has no {lang!r} prompts; diagnosis in {lang!r} "
                f"uses the {other!r} ones"
                for lang, other in used.items() if other != lang
            ]
    return list(dict.fromkeys(warnings))
