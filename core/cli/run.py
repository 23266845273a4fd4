"""`m3fm run` and `m3fm embed`: the model applied to the user's inputs."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import click

from m3fm.cli.app import ModelFolder, PathArg, cli
from m3fm.cli.models import decoding, load_model, repetition_options
from m3fm.cli.results import Tally, emit_results
from m3fm.diagnosis import SOURCES
from m3fm.outputs import check_output_path, json_text, shown_path, write_failure
from m3fm.registry import M3fmError, UsageError

WORKERS = click.option(
    "--workers", type=click.IntRange(min=0), default=0, show_default=True,
    help="Processes that read and preprocess inputs ahead of the model; 0 reads them in "
    "this process.")
"""`--workers` of `run` and `embed`: decoding the inputs overlaps with the model's work."""


@cli.command()
@click.option("--plugin", "modality", required=True, help="Modality plugin, e.g. ct or cxr.")
@click.option("--lang", "language", default="en", show_default=True,
              help="Report language, e.g. en or zh.")
@click.option("--checkpoint", type=ModelFolder(),
              help="Report-model directory (or a training run's folder, for its final/); "
              "default: the bundled m3fm-small model.")
@click.option("--out", type=PathArg,
              help="Also write one JSON object per input to this JSON Lines file.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON Lines instead of text.")
@click.option("--bridge", type=click.Choice(["memory", "noise"]),
              help="How image embeddings cross to the text side; default: the model's.")
@click.option("--beams", type=click.IntRange(min=1), help="Beam width; 1 is greedy.")
@click.option("--memory-temperature", type=click.FloatRange(min=0, min_open=True),
              help="Softmax temperature of the memory bridge; default: the model's.")
@repetition_options
@click.option("--labels", metavar="LABEL,...",
              help="Diagnosis labels to score; default: every label of the modality.")
@click.option("--no-diagnosis", is_flag=True, help="Write reports only.")
@click.option("--diagnosis-from", type=click.Choice(SOURCES), default="image",
              show_default=True, help="Read label probabilities from the image, the written "
              "report, or the mean of both.")
@click.option("--no-report", is_flag=True,
              help="Diagnosis only; an alignment-only --checkpoint is then enough.")
@click.option("--resume", is_flag=True,
              help="Skip the inputs that already have a line (result or error) in --out and "
              "append the others.")
@click.option("--sr", "sr_dir", type=PathArg, metavar="DIR",
              help="Write a DICOM Structured Report per DICOM input (file or series) here.")
@click.option("--fhir", "fhir_dir", type=PathArg, metavar="DIR",
              help="Write an HL7 FHIR R4 DiagnosticReport (JSON) per input here.")
@click.option("--heatmaps", "heatmaps_dir", type=PathArg, metavar="DIR",
              help="Write saliency overlays per input here, one per label and one for the "
              "report: PNG, and for a DICOM slice also a DICOM Secondary Capture.")
@WORKERS
@click.argument("paths", nargs=-1, required=True, type=PathArg)
def run(modality: str, language: str, checkpoint: Path | None, out: Path | None,
        as_json: bool, bridge: str | None, beams: int | None,
        memory_temperature: float | None, repetition_penalty: float | None,
        repeated_clauses: str | None, labels: str | None, no_diagnosis: bool,
        diagnosis_from: str, no_report: bool, resume: bool, sr_dir: Path | None,
        fhir_dir: Path | None, heatmaps_dir: Path | None, workers: int,
        paths: tuple[Path, ...]) -> None:
    """Write a report in --lang and zero-shot label probabilities for each image, DICOM
    file, NIfTI volume or folder in PATHS.

    Inputs are processed in batches, and each result is written as soon as it is finished: an
    input that cannot be read at once, with its error, while the others go on; the exit code
    is 1 only when no input could be processed. Under torchrun each rank takes its share of
    the inputs, and rank 0 merges the ranks' results into --out in input order.

    --sr, --fhir and --heatmaps write files per input for clinical systems; each result
    names its files, and says in "notes" what an input could not get (a PNG has no SR). A
    model that stores a description of its training images flags inputs outside it ("ood").
    """
    from m3fm.analysis import analyse_inputs, model_validation, requested_analysis, split_labels
    from m3fm.batch_jobs import ResultsJob, Shard, joined
    from m3fm.generation import DecodeConfig
    from m3fm.inputs import iter_inputs
    from m3fm.progress import track
    from m3fm.registry import get_registry

    if no_report and no_diagnosis:
        raise UsageError("--no-report with --no-diagnosis leaves nothing to do")
    analysis = requested_analysis(modality, language, split_labels(labels),
                                  report=not no_report, diagnosis=not no_diagnosis,
                                  diagnosis_from=diagnosis_from,
                                  validation=model_validation(checkpoint))
    spec = get_registry().modality(modality)
    shard = Shard.from_env()
    clinical = _clinical_outputs(sr_dir, fhir_dir, heatmaps_dir)
    # --out is checked and locked before the model loads: a bad path fails in a second
    with joined(shard), ResultsJob(out, resume, shard) as job:
        model = load_model(checkpoint, reports=analysis.report or diagnosis_from != "image")
        decode = decoding(getattr(model, "decode", DecodeConfig()), bridge, beams,
                          memory_temperature, repetition_penalty, repeated_clauses)
        if clinical is not None:
            clinical.start(model, analysis, checkpoint)
        job.start()
        results = analyse_inputs(model, job.pending(iter_inputs(spec, paths)), analysis,
                                 decode, workers=_checked(workers),
                                 on_result=clinical)
        tally = emit_results(track(results, "analysing inputs"), out=job.sink,
                             as_json=as_json, render=_as_text)
        job.finish(lambda: iter_inputs(spec, paths))
        done, failed = shard.total(tally.done, tally.failed)
    if done == 0:
        click.echo(f"m3fm: every input already has a line in {shown_path(out)}", err=True)
    elif failed == done:
        raise M3fmError(f"no input could be processed ({failed} failed)")


def _clinical_outputs(sr: Path | None, fhir: Path | None, heatmaps: Path | None):
    """The ClinicalOutputs asked for, their folders checked; None when none is asked (their
    libraries, highdicom, fhir.resources and captum, are then not imported)."""
    if sr is None and fhir is None and heatmaps is None:
        return None
    from m3fm.clinical.outputs import ClinicalOutputs

    clinical = ClinicalOutputs(sr=sr, fhir=fhir, heatmaps=heatmaps)
    clinical.check()
    return clinical


def _checked(workers: int) -> int:
    """`--workers`, warned about when too many; torch is imported only once a command runs."""
    from m3fm.data.streaming import check_workers

    return check_workers(workers)


def _as_text(result: dict) -> str:
    """One input's result for people: its path, its report, then one line per label; a label
    scored with prompts of another language than the result's says which, and a label the
    model was not validated on says so instead of looking like a measured probability."""
    lines = [result["input"]]
    if result.get("ood"):
        lines.append(f"  warning: unlike the {result['modality']} images this model was trained "
                     f"on (score {result['ood_score']:.2f} > {result['ood_threshold']:.2f}); "
                     "its report and probabilities are not reliable for this input")
    if "report" in result:
        lines.append(result["report"])
    used = result.get("prompt_languages", {})
    unvalidated = set(result.get("unvalidated", ()))
    for label, p in result.get("diagnosis", {}).items():
        other = used.get(label, result.get("language"))
        notes = [f"{other} prompts"] if other != result.get("language") else []
        notes += ["unvalidated"] if label in unvalidated else []
        note = f" ({', '.join(notes)})" if notes else ""
        lines.append(f"  {label}: {p:.3f}{note}")
    for kind, written in result.get("files", {}).items():
        for path in written if isinstance(written, list) else [written]:
            lines.append(f"  {kind}: {path}")
    lines += [f"  note: {note}" for note in result.get("notes", ())]
    return "\n".join(lines) + "\n"


@cli.command()
@click.option("--checkpoint", required=True, type=ModelFolder(),
              help="Model directory (or a training run's folder, for its final/).")
@click.option("--plugin", "modality", help="Modality of the images in PATHS.")
@click.option("--lang", "language", help="Language of the reports in --texts.")
@click.option("--texts", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="A text file with one report per line, embedded instead of images.")
@click.option("--out", type=PathArg,
              help="A .safetensors file of all vectors, written at the end; any other name "
              "is a JSON Lines file written as vectors come (resumable, shardable).")
@click.option("--resume", is_flag=True,
              help="Skip the inputs already in the JSON Lines --out and append the others.")
@WORKERS
@click.argument("paths", nargs=-1, type=PathArg)
def embed(checkpoint: Path, modality: str | None, language: str | None, texts: Path | None,
          out: Path | None, resume: bool, workers: int, paths: tuple[Path, ...]) -> None:
    """Embed images (PATHS) or reports (--texts with --lang) into the shared space.

    Vectors are L2-normalised. Images that fail to load are reported and left out; the exit
    code is then 1, after the others are written. With a JSON Lines --out (or none), the run
    can be resumed and, under torchrun, sharded like `m3fm run`.
    """
    from m3fm.batch_jobs import ResultsJob, Shard, joined
    from m3fm.generation import load

    if bool(paths) == bool(texts):
        raise UsageError("give either image PATHS or --texts FILE")
    if texts is not None and language is None:
        raise UsageError("--texts needs --lang")
    shard = Shard.from_env()
    if out is not None and out.suffix.lower() == ".safetensors":
        if resume or shard.size > 1:
            raise UsageError("--resume and torchrun need a JSON Lines --out (e.g. vectors.jsonl):"
                             " a .safetensors file is written whole, at the end")
        check_output_path(out)
        tally = _save_embeddings(_embeddings(load(checkpoint), modality, language, texts, paths,
                                             workers, lambda inputs: inputs), out)
        if tally.failed:
            sys.exit(1)
        return
    with joined(shard), ResultsJob(out, resume, shard) as job:
        embedder = load(checkpoint)
        job.start()
        results = _embeddings(embedder, modality, language, texts, paths, workers, job.pending)
        tally = emit_results(results, out=job.sink, as_json=out is None, render=None)
        job.finish(lambda: _embed_inputs(embedder, modality, texts, paths))
        done, failed = shard.total(tally.done, tally.failed)
    if out is not None:
        click.echo(f"{done - failed} embeddings in {shown_path(out)}")
    if failed:
        sys.exit(1)


def _embed_inputs(embedder, modality: str | None, texts: Path | None,
                  paths: tuple[Path, ...]) -> Iterable:
    """What `embed` embeds, in order: the lines of `texts`, or the images PATHS name."""
    from m3fm.inputs import iter_inputs
    from m3fm.registry import get_registry

    if texts is not None:
        return [line for line in texts.read_text(encoding="utf-8").splitlines() if line.strip()]
    return iter_inputs(get_registry().modality(embedder.modality(modality)), paths)


def _embeddings(embedder, modality: str | None, language: str | None, texts: Path | None,
                paths: tuple[Path, ...], workers: int,
                share: Callable[[Iterable], Iterable]) -> Iterator[dict]:
    """``{"input", "embedding"}`` (or ``{"input", "error"}``) for this process's `share` of
    the inputs."""
    inputs = share(_embed_inputs(embedder, modality, texts, paths))
    if texts is not None:
        mine = list(inputs)
        vectors = embedder.embed_texts(mine, lang=language).tolist()
        return ({"input": item, "embedding": vector}
                for item, vector in zip(mine, vectors, strict=True))
    return _embedded_files(embedder, embedder.modality(modality), inputs, _checked(workers))


def _embedded_files(embedder, modality: str, inputs: Iterable[Path],
                    workers: int) -> Iterator[dict]:
    """``{"input", "embedding"}`` or ``{"input", "error"}`` per image, a batch at a time."""
    from m3fm.analysis import input_batches
    from m3fm.progress import track
    from m3fm.registry import get_registry

    spec = get_registry().modality(modality)
    batches = input_batches(spec, inputs, EMBED_BATCH, workers)
    for batch in track(batches, "embedding"):
        if isinstance(batch, dict):
            yield batch
            continue
        vectors = embedder.embed_images([image for _, image in batch], modality=modality)
        for (path, _), vector in zip(batch, vectors.tolist(), strict=True):
            yield {"input": str(path), "embedding": vector}


EMBED_BATCH = 32
"""Images embedded together; their vectors are printed before the next batch loads."""


def _save_embeddings(results: Iterable[dict], out: Path) -> Tally:
    """All vectors in one .safetensors file, written atomically (a crash leaves no half
    file); failed inputs are reported on stderr as they come."""
    import torch

    from m3fm.checkpoint import save_tensor_file

    kept: list[dict] = []

    def keep(results: Iterable[dict]) -> Iterator[dict]:
        for result in results:
            if "error" not in result:
                kept.append(result)
            yield result

    tally = emit_results(keep(results), out=None, as_json=False, render=None)
    if not kept:
        raise M3fmError(f"no input could be embedded ({tally.failed} failed); {out} not written")
    vectors = torch.tensor([result["embedding"] for result in kept], dtype=torch.float32)
    inputs = [result["input"] for result in kept]
    partial = out.with_name(f".{out.name}.partial")
    try:
        save_tensor_file({"embeddings": vectors}, partial, metadata={"inputs": json_text(inputs)})
        os.replace(partial, out)
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise write_failure(error, out, 0) from None
    click.echo(f"wrote {len(inputs)} embeddings of dimension {vectors.shape[1]} to "
               f"{shown_path(out)}")
    return tally
