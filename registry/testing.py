"""Conformance kit: check a plugin's spec against the contract, with messages that say what to fix.

Call these from your plugin's tests (the `m3fm plugins new` scaffold does)::

    from m3fm.registry.testing import check_language, check_modality

    def test_my_language_conforms():
        check_language(SPEC, samples=["A sample report.", "Another one."])

    def test_my_modality_conforms(tmp_path):
        check_modality(SPEC, samples=[path_to_a_real_file], scratch=tmp_path)

Each function runs its checks in order and raises :class:`ConformanceError` at the first that
fails, naming the check and the fix; it returns the names of the checks passed.  The engine is
imported inside the functions, so this module keeps the registry's import-light layering.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .specs import EncoderOptions, LanguageSpec, ModalitySpec


class ConformanceError(AssertionError):
    """A plugin breaks the contract: which check, what was found, and how to fix it."""

    def __init__(self, check: str, problem: str, fix: str) -> None:
        self.check = check
        super().__init__(f"{check}: {problem}; {fix}")


def check_language(spec: LanguageSpec, samples: Sequence[str]) -> list[str]:
    """Check a language plugin on sample reports written in it (at least one)."""
    import sacrebleu

    if not samples:
        raise ConformanceError("samples", "no sample reports given",
                               "pass a few typical reports of the language")
    passed = []
    for text in samples:
        once = spec.normalize(text)
        if spec.normalize(once) != once:
            raise ConformanceError(
                "normalize is idempotent", f"normalising {once!r} again changes it",
                "make `normalize` a fixed point: normalize(normalize(x)) == normalize(x)")
        words = spec.tokenize_words(once)
        if spec.join_words(words) != once:
            raise ConformanceError(
                "join_words inverts tokenize_words",
                f"{once!r} → {words!r} → {spec.join_words(words)!r}",
                "make join_words(tokenize_words(x)) == x for normalised text")
        if once.strip() and not spec.split_sentences(once):
            raise ConformanceError("split_sentences", f"no sentence found in {once!r}",
                                   "return at least one sentence for non-empty text")
    passed += ["normalize is idempotent", "join_words inverts tokenize_words", "split_sentences"]
    try:
        sacrebleu.BLEU(tokenize=spec.metric_tokenizer)
    except KeyError:
        raise ConformanceError(
            "metric tokenizer", f"sacrebleu has no tokenizer {spec.metric_tokenizer!r}",
            "set `metric_tokenizer` to a sacrebleu name such as '13a', 'intl', 'zh' or 'char'",
        ) from None
    passed.append("metric tokenizer")
    for label in sorted({*spec.finding_names, *spec.label_prompts}):
        positive, negative = spec.prompts(label)
        if not positive or not negative or not all(p.strip() for p in positive + negative):
            raise ConformanceError(
                "prompts", f"label {label!r} has an empty positive or negative prompt",
                "give every label in `finding_names` or `label_prompts` non-empty sentences")
    passed.append("prompts")
    return passed


def check_modality(spec: ModalitySpec, samples: Sequence[Path], scratch: Path,
                   options: EncoderOptions | None = None) -> list[str]:
    """Check a modality plugin on real sample files of its declared types (at least one);
    `scratch` is a writable folder for a deliberately corrupt file."""
    import torch

    from m3fm.imaging import preprocess
    from m3fm.registry import InputError

    if not samples:
        raise ConformanceError("samples", "no sample files given",
                               "pass at least one real file of a declared type")
    shapes = {spec.slice_shape, *([spec.volume_shape] if spec.volume_shape else [])}
    tensors = []
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
        tensors.append(image)
    encoder = spec.build_encoder(options or EncoderOptions())
    if not isinstance(getattr(encoder, "feature_dim", None), int):
        raise ConformanceError("encoder feature_dim", "the encoder has no integer `feature_dim`",
                               "set `feature_dim` on the module `build_encoder` returns")
    encoder.eval()
    for shape in {tuple(t.shape) for t in tensors}:
        batch = torch.stack([t for t in tensors if tuple(t.shape) == shape][:1] * 2)
        with torch.no_grad():
            features = encoder(batch)
        if tuple(features.shape) != (2, encoder.feature_dim):
            raise ConformanceError(
                "encoder output", f"a batch of 2 × {shape} gave {tuple(features.shape)}",
                f"map (B, *{shape}) to (B, feature_dim={encoder.feature_dim})")
    corrupt = Path(scratch) / f"corrupt{spec.file_types[0]}"
    corrupt.write_bytes(b"not an image, deliberately")
    try:
        preprocess(spec, corrupt)
    except InputError:
        pass
    else:
        raise ConformanceError("corrupt file", f"{corrupt.name} loaded without error",
                               "let `load` raise on unreadable input")
    return ["file types", "load returns float32", "load shape", "encoder feature_dim",
            "encoder output", "corrupt file"]
