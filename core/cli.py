"""The `m3fm` command line.

Every failure a user can cause is reported as one line, ``m3fm: error: <what and how to fix>``,
with exit code 2 for wrong arguments or names and 1 for anything else; a traceback is shown
only with ``M3FM_DEBUG=1``.  Commands that print results take ``--json`` for machines.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import sys
import tempfile
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from m3fm import __version__
from m3fm.diagnosis import SOURCES
from m3fm.generation import DecodeConfig
from m3fm.registry import (
    KINDS,
    PLUGIN_API_VERSION,
    M3fmError,
    UnknownNameError,
    UsageError,
    get_registry,
)

console = Console()
err_console = Console(stderr=True)

PathArg = click.Path(path_type=Path)


def _print_json(payload: object) -> None:
    click.echo(json.dumps(payload, ensure_ascii=False, indent=2, default=str))


def _table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row)
    console.print(table)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="m3fm")
def cli() -> None:
    """m3fm: medical foundation models across imaging domains and report languages.

    Modalities (cxr, ct, ...) and languages (en, zh, ...) are plugins; `m3fm plugins list`
    shows what is installed.
    """


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def version(as_json: bool) -> None:
    """Show the versions of m3fm, its plugin API and the runtime."""
    import torch

    info = {
        "m3fm": __version__,
        "plugin_api": PLUGIN_API_VERSION,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
    }
    if as_json:
        _print_json(info)
    else:
        click.echo(" ".join(f"{key}={value}" for key, value in info.items()))


# --- plugins -------------------------------------------------------------------------------


@cli.group()
def plugins() -> None:
    """Inspect installed plugins (modalities, languages, dataset formats)."""


PROBLEM_CHARS = 300
"""A failed check's problem is cut to this length in `plugins list`: one readable status."""


def _plugin_rows(check: bool = True) -> list[dict[str, str]]:
    """One row per provided name, then one per plugin that failed to load.

    With `check`, each modality and language runs the conformance kit on the inputs it ships;
    the first failing check makes its status ``incompatible: <check>: <problem>``.
    """
    from m3fm.registry.testing import first_failure

    registry = get_registry()
    rows = []
    waiting = (err_console.status("Running the conformance kit on each plugin…")
               if check and err_console.is_terminal else contextlib.nullcontext())
    with tempfile.TemporaryDirectory(prefix="m3fm-conformance-") as scratch, waiting:
        for provided in registry.all_provided():
            others = [
                p.plugin.name for p in registry.providers(provided.kind, provided.name)
                if p.plugin is not provided.plugin
            ]
            status = f"conflict with {', '.join(others)}" if others else "ok"
            failure = first_failure(provided.kind, provided.spec, Path(scratch)) if check else None
            if failure is not None:
                problem = failure.problem
                if len(problem) > PROBLEM_CHARS:
                    problem = problem[:PROBLEM_CHARS - 1] + "…"
                status = f"incompatible: {failure.check}: {problem}"
            rows.append({
                "name": provided.name,
                "kind": provided.kind,
                "plugin": provided.plugin.name,
                "source": provided.plugin.source,
                "status": status,
            })
    for info in registry.plugins.values():
        if info.status != "ok":
            rows.append({
                "name": info.name, "kind": "plugin", "plugin": info.name,
                "source": info.source, "status": f"{info.status}: {info.error}",
            })
    return rows


@plugins.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.option("--no-check", is_flag=True,
              help="Skip the conformance kit: faster, but a plugin that loads yet breaks the "
              "contract is listed as ok.")
def plugins_list(as_json: bool, no_check: bool) -> None:
    """List every modality, language and dataset format, with the plugin that provides it.

    Plugins that failed to load or need another plugin-API version are listed with the reason.
    Each modality and language also runs the conformance kit on the samples it ships (a
    language without sample reports on its own prompts, a modality without sample files on
    what needs no file); one that fails is listed as ``incompatible: <check>: <problem>``.
    """
    rows = _plugin_rows(check=not no_check)
    if as_json:
        _print_json(rows)
        return
    _table(
        f"m3fm {__version__} plugins (plugin API {PLUGIN_API_VERSION})",
        ["name", "kind", "plugin", "source", "status"],
        [list(row.values()) for row in rows],
    )


def _describe(kind: str, spec: object) -> dict[str, object]:
    """A spec's declared data, without its callables."""
    data = {
        key: value for key, value in spec.model_dump().items()  # type: ignore[attr-defined]
        if not callable(value)
    }
    return {"kind": kind, **data}


@plugins.command("new")
@click.argument("name")
@click.option("--kind", type=click.Choice(["modality", "language"]), required=True,
              help="What the plugin provides.")
@click.option("--dir", "directory", type=PathArg, help="Where to write it; default ./m3fm-NAME.")
def plugins_new(name: str, kind: str, directory: Path | None) -> None:
    """Write a new plugin package: pyproject with the entry point, the spec, README and a
    conformance test. It passes its own tests right after `pip install -e DIR`."""
    from m3fm.scaffold import new_plugin

    target = new_plugin(name, kind, directory)
    click.echo(f"wrote {kind} plugin {name!r} in {target}; next: pip install -e "
               f"'{target}[test]' && pytest {target}")


@plugins.command("available")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def plugins_available(as_json: bool) -> None:
    """List the plugins the catalog knows, whether each is installed and fits this release."""
    from m3fm.registry.catalog import catalog

    rows = []
    for entry in catalog():
        status = ("installed" if entry.installed() else "not installed") + (
            "" if entry.compatible(PLUGIN_API_VERSION) else
            f", incompatible (needs plugin API {entry.min_api})")
        rows.append({"name": entry.name, "kind": entry.kind, "package": entry.package,
                     "status": status, "description": entry.description,
                     "homepage": str(entry.homepage)})
    if as_json:
        _print_json(rows)
        return
    _table(f"plugin catalog (this m3fm implements plugin API {PLUGIN_API_VERSION})",
           ["name", "kind", "package", "status", "description"],
           [[row[c] for c in ("name", "kind", "package", "status", "description")]
            for row in rows])


@plugins.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def plugins_show(name: str, as_json: bool) -> None:
    """Show what a modality, language, dataset format or plugin named NAME declares."""
    registry = get_registry()
    found = [
        _describe(provided.kind, provided.spec) | {"plugin": provided.plugin.name,
                                                  "source": provided.plugin.source}
        for kind in KINDS for provided in registry.providers(kind, name)
    ]
    info = registry.plugins.get(name)
    if info is not None:
        found.append({"kind": "plugin", "name": info.name, "module": info.module,
                      "source": info.source, "status": info.status, "error": info.error,
                      "provides": info.provides})
    if not found:
        known = {n for kind in KINDS for n in registry.names(kind)} | set(registry.plugins)
        raise UnknownNameError("plugin, modality, language or dataset format", name, list(known))
    if as_json:
        _print_json(found)
        return
    for entry in found:
        _table(f"{entry['kind']} {name}", ["field", "value"],
               [[key, json.dumps(value, ensure_ascii=False, default=str)]
                for key, value in entry.items() if key != "kind"])


# --- inputs and data -----------------------------------------------------------------------


@cli.command()
@click.option("--plugin", "modality", required=True, help="Modality plugin, e.g. ct or cxr.")
@click.argument("paths", nargs=-1, required=True, type=PathArg)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per input.")
def preprocess(modality: str, paths: tuple[Path, ...], as_json: bool) -> None:
    """Load inputs through a modality plugin and report the tensors it produces.

    Use it to check that your files (PNG/JPEG, DICOM, NIfTI, DICOM series folders) load as
    expected before training or inference. Inputs that fail are reported one per line; the
    exit code is 1 if any failed.
    """
    from m3fm.imaging import preprocess as load_input
    from m3fm.inputs import collect_inputs
    from m3fm.progress import track

    spec = get_registry().modality(modality)
    results = []
    for path in track(collect_inputs(spec, paths), "preprocessing"):
        try:
            tensor = load_input(spec, path)
        except M3fmError as exc:
            results.append({"input": str(path), "error": str(exc)})
            continue
        results.append({
            "input": str(path), "shape": list(tensor.shape), "dtype": str(tensor.dtype),
            "min": round(tensor.min().item(), 4), "max": round(tensor.max().item(), 4),
            "mean": round(tensor.mean().item(), 4),
        })
    if as_json:
        for result in results:
            click.echo(json.dumps(result, ensure_ascii=False))
    else:
        columns = ["input", "shape", "min", "max", "mean", "error"]
        _table(f"{modality}: {len(results)} inputs", columns,
               [[str(r.get(column, "")) for column in columns] for r in results])
    if any("error" in r for r in results):
        sys.exit(1)


@cli.group()
def data() -> None:
    """Read data sets in the built-in or plugin-provided formats."""


@data.command("summary")
@click.argument("path", type=PathArg)
@click.option("--format", "format_name", help="Dataset format; detected when omitted.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def data_summary(path: Path, format_name: str | None, as_json: bool) -> None:
    """Count the records of a data set by split, modality and language, and list bad rows."""
    from m3fm.data import read_dataset, summarize

    result = read_dataset(path, format_name)
    counts = summarize(result)
    problems = [problem.model_dump() for problem in result.problems]
    if as_json:
        _print_json({"counts": counts, "problems": problems})
        return
    if counts:
        _table(f"{path}: {len(result.records)} records", list(counts[0]),
               [[str(value) for value in row.values()] for row in counts])
    for problem in problems:
        err_console.print(f"[yellow]skipped[/] {problem['source']}: {problem['message']}",
                          highlight=False)


# --- the engine's verbs --------------------------------------------------------------------


@cli.command()
@click.option("--plugin", "modality", required=True, help="Modality plugin, e.g. ct or cxr.")
@click.option("--lang", "language", default="en", show_default=True,
              help="Report language, e.g. en or zh.")
@click.option("--checkpoint", type=PathArg,
              help="Report-model directory; default: the bundled m3fm-small model.")
@click.option("--out", type=PathArg,
              help="Also write one JSON object per input to this JSON Lines file.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON Lines instead of text.")
@click.option("--bridge", type=click.Choice(["memory", "noise"]),
              help="How image embeddings cross to the text side; default: the model's.")
@click.option("--beams", type=click.IntRange(min=1), help="Beam width; 1 is greedy.")
@click.option("--memory-temperature", type=click.FloatRange(min=0, min_open=True),
              help="Softmax temperature of the memory bridge; default: the model's.")
@click.option("--labels", metavar="LABEL,...",
              help="Diagnosis labels to score; default: every label of the modality.")
@click.option("--no-diagnosis", is_flag=True, help="Write reports only.")
@click.option("--diagnosis-from", type=click.Choice(SOURCES), default="image",
              show_default=True, help="Read label probabilities from the image, the written "
              "report, or the mean of both.")
@click.option("--no-report", is_flag=True,
              help="Diagnosis only; an alignment-only --checkpoint is then enough.")
@click.argument("paths", nargs=-1, required=True, type=PathArg)
def run(modality: str, language: str, checkpoint: Path | None, out: Path | None,
        as_json: bool, bridge: str | None, beams: int | None,
        memory_temperature: float | None, labels: str | None, no_diagnosis: bool,
        diagnosis_from: str, no_report: bool, paths: tuple[Path, ...]) -> None:
    """Write a report in --lang and zero-shot label probabilities for each image, DICOM
    file, NIfTI volume or folder in PATHS.

    Inputs are processed in batches. An input that cannot be read is reported in its place and
    the others go on; the exit code is 1 only when no input could be processed.
    """
    from m3fm.analysis import Analysis, analyse_inputs
    from m3fm.diagnosis.zeroshot import resolve_labels
    from m3fm.inputs import collect_inputs
    from m3fm.progress import track

    if no_report and no_diagnosis:
        raise UsageError("--no-report with --no-diagnosis leaves nothing to do")
    registry = get_registry()
    spec = registry.modality(modality)
    registry.language(language)
    chosen = () if no_diagnosis else resolve_labels(modality, _split_labels(labels))
    analysis = Analysis(modality, language, report=not no_report, labels=chosen,
                        diagnosis_from=diagnosis_from)
    model = _model(checkpoint, reports=analysis.report or diagnosis_from != "image")
    decode = _decoding(getattr(model, "decode", DecodeConfig()), bridge, beams,
                       memory_temperature)
    inputs = collect_inputs(spec, paths)
    results = analyse_inputs(model, inputs, analysis, decode)
    failed = 0
    sink = out.open("w", encoding="utf-8") if out is not None else None
    try:
        for result in track(results, "analysing inputs", total=len(inputs)):
            line = json.dumps(result, ensure_ascii=False)
            if sink is not None:
                sink.write(line + "\n")
                sink.flush()  # finished results survive a later crash or Ctrl-C
            failed += "error" in result
            if "error" in result:
                click.echo(f"m3fm: error: {' '.join(result['error'].split())}", err=True)
            elif as_json:
                click.echo(line)
            else:
                click.echo(_as_text(result))
    finally:
        if sink is not None:
            sink.close()
    if failed == len(inputs):
        raise M3fmError(f"no input could be processed ({failed} failed)")


def _split_labels(labels: str | None) -> list[str] | None:
    return None if labels is None else [label.strip() for label in labels.split(",") if label]


def _as_text(result: dict) -> str:
    """One input's result for people: its path, its report, then one line per label."""
    lines = [result["input"]]
    if "report" in result:
        lines.append(result["report"])
    lines += [f"  {label}: {p:.3f}" for label, p in result.get("diagnosis", {}).items()]
    return "\n".join(lines) + "\n"


def _decoding(default, bridge: str | None, beams: int | None, temperature: float | None):
    """`default` (a DecodeConfig) with the decoding options given on the command line."""
    changes = {"bridge": bridge, "num_beams": beams, "memory_temperature": temperature}
    return default.model_copy(update={k: v for k, v in changes.items() if v is not None})


def _model(checkpoint: Path | None, reports: bool):
    """The model in `checkpoint` (the bundled default when None); a report model if `reports`."""
    if reports or checkpoint is None:
        return _report_model(checkpoint)
    if not checkpoint.is_dir():
        raise UsageError(f"--checkpoint {checkpoint}: no such directory")
    from m3fm.generation import load

    return load(checkpoint)


def _report_model(checkpoint: Path | None):
    """The report model in `checkpoint`, or the bundled default."""
    from m3fm.generation.reporting import ReportModel, is_report_model
    from m3fm.models import default_model_dir

    if checkpoint is None:
        checkpoint = default_model_dir()
    elif not checkpoint.is_dir():
        raise UsageError(f"--checkpoint {checkpoint}: no such directory")
    elif not is_report_model(checkpoint):
        raise UsageError(
            f"--checkpoint {checkpoint}: not a report model (an alignment checkpoint cannot "
            "write reports; train a `generate` recipe)"
        )
    return ReportModel.from_pretrained(checkpoint)


def _parse_overrides(pairs: tuple[str, ...]) -> dict[str, str]:
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set expects key=value, got {pair!r}")
        overrides[key.strip()] = value
    return overrides


@cli.command()
@click.option("--recipe", required=True,
              help="Name of a shipped recipe (see `m3fm recipes`) or a recipe file.")
@click.option("--data", "data_dir", required=True, type=click.Path(path_type=Path, exists=True),
              help="Data directory; recipe data sources are relative to it.")
@click.option("--out", required=True, type=PathArg, help="Run directory for checkpoints and logs.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a recipe field by dotted path, e.g. train.max_steps=50; repeatable.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
def train(recipe: str, data_dir: Path, out: Path, overrides: tuple[str, ...], resume: bool) -> None:
    """Train a model from a recipe; start it under `torchrun` for several processes.

    Writes checkpoints to OUT/checkpoints, the final model to OUT/final and metrics to
    OUT/metrics.jsonl. Ctrl-C saves a checkpoint; `--resume` continues exactly where it stopped.
    """
    from m3fm.recipes import load_recipe
    from m3fm.recipes.training import train_recipe
    from m3fm.training.distributed import Ranks

    loaded = load_recipe(recipe, _parse_overrides(overrides))
    ranks = Ranks.from_environment()
    result = train_recipe(loaded, data_dir, out, resume=resume, ranks=ranks,
                          notify=lambda message: click.echo(message, err=True))
    if ranks.is_main:
        click.echo(f"trained {loaded.name} v{loaded.version} for {result.step} steps; "
                   f"final loss {result.loss:.4f}; model in {result.checkpoint}")
        _print_metrics(result.metrics)


def _print_metrics(metrics: dict[str, float]) -> None:
    if metrics:
        _table("validation metrics", ["metric", "value"],
               [[name, f"{value:.4g}"] for name, value in sorted(metrics.items())])


@cli.command()
def recipes() -> None:
    """List the training recipes shipped with m3fm."""
    from m3fm.recipes import available_recipes, load_recipe

    rows = []
    for name in available_recipes():
        recipe = load_recipe(name)
        rows.append([name, str(recipe.version), recipe.stage, recipe.description])
    _table("recipes", ["name", "version", "stage", "description"], rows)


@cli.command()
@click.option("--checkpoint", "checkpoints", required=True, multiple=True,
              type=click.Path(path_type=Path, exists=True, file_okay=False),
              help="Model directory; repeat it to compare report models in one table.")
@click.option("--data", "data_dir", required=True, type=click.Path(path_type=Path, exists=True),
              help="Data set folder or file.")
@click.option("--format", "format_name", help="Dataset format; detected when omitted.")
@click.option("--split", default="val", show_default=True, help="Split to evaluate on.")
@click.option("--task", type=click.Choice(["retrieval", "report", "diagnosis"]), required=True)
@click.option("--lang", "language", help="Language to evaluate; default: every language "
              "of the model(s).")
@click.option("--out", type=PathArg, help="Also write the results as JSON to this file.")
@click.option("--markdown", type=PathArg, help="Report task: write the table as markdown too.")
@click.option("--reports", "reports_out", type=PathArg,
              help="Report task: write each image's reference and generated reports (JSONL).")
@click.option("--baselines/--no-baselines", default=True, show_default=True,
              help="Report task: score the most-frequent, random-same-label and "
              "nearest-report baselines beside the models.")
@click.option("--bridge", type=click.Choice(["memory", "noise"]),
              help="Report task: decode with this bridge instead of each model's default.")
@click.option("--beams", type=click.IntRange(min=1), help="Report task: beam width.")
@click.option("--memory-temperature", type=click.FloatRange(min=0, min_open=True),
              help="Report task: softmax temperature of the memory bridge.")
@click.option("--plugin", "modality", help="Diagnosis task: modality of the images; default: "
              "the model's only one.")
@click.option("--label", help="Diagnosis task: label to diagnose; default: the modality's "
              "first label that the data set records.")
@click.option("--plots", type=PathArg, help="Diagnosis task: write ROC and few-shot PNGs here.")
def evaluate(checkpoints: tuple[Path, ...], data_dir: Path, format_name: str | None, split: str,
             task: str, language: str | None, out: Path | None, markdown: Path | None,
             reports_out: Path | None, baselines: bool, bridge: str | None,
             beams: int | None, memory_temperature: float | None, modality: str | None,
             label: str | None, plots: Path | None) -> None:
    """Evaluate models on a data split: retrieval (recall@k, median rank), report
    generation (BLEU-1..4, ROUGE-L, CIDEr-D and clinical-efficacy P/R/F1, beside baselines) or
    diagnosis (zero-shot from images and reports, few-shot probes, chance; AUC, F1, accuracy).
    """
    from m3fm.data import read_records

    if language is not None:
        get_registry().language(language)
    records = read_records(data_dir, format_name)
    after: list[tuple[str, list[str], list[list[str]]]] = []  # tables printed after the main one
    if task == "diagnosis":
        if len(checkpoints) != 1:
            raise UsageError("diagnosis evaluates one --checkpoint at a time")
        from m3fm.benchmarks.results import mean_std

        rows, few_shot = _diagnosis_rows(checkpoints[0], records, split, language, modality,
                                         label, plots)
        columns = ["method", "language", "n", "positives", "auc", "f1", "accuracy"]
        title = f"diagnosis of {rows[0]['label']} ({rows[0]['modality']}) on {split}"
        after = [("few-shot linear probe (mean ± std over seeds)",
                  ["shots", "draws", "auc", "f1", "accuracy"],
                  [[r["shots"], str(r["draws"]), *(mean_std(r, m) for m in ("auc", "f1",
                                                                            "accuracy"))]
                   for r in few_shot])]
        rows_for_out: list[dict] | dict = {"rows": rows, "few_shot": few_shot}
    elif task == "retrieval":
        if len(checkpoints) != 1:
            raise UsageError("retrieval evaluates one --checkpoint at a time")
        rows = rows_for_out = _retrieval_rows(checkpoints[0], records, split, language,
                                              data_dir)
        columns = ["modality", "language", "direction", "n", "chance_R@5", "R@1", "R@5",
                   "R@10", "median_rank"]
        title = f"retrieval on {split}"
    else:
        from m3fm.generation.evaluation import REPORT_METRICS, evaluate_report_models

        models = {}
        for path in checkpoints:
            name = _system_name(path)
            models[name if name not in models else str(path)] = _report_model(path)
        for model in models.values():  # each model keeps its own defaults for the rest
            model.decode = _decoding(model.decode, bridge, beams, memory_temperature)
        result = evaluate_report_models(
            models, records, split=split, languages=[language] if language else None,
            baselines=baselines,
        )
        rows = rows_for_out = result.rows
        columns = ["modality", "language", "system", "n", *REPORT_METRICS]
        title = f"report generation on {split}"
        if reports_out is not None:
            reports_out.write_text("".join(json.dumps(entry, ensure_ascii=False) + "\n"
                                           for entry in result.reports), encoding="utf-8")
    if out is not None:
        out.write_text(json.dumps(rows_for_out, ensure_ascii=False, indent=2))
    if markdown is not None:
        from tabulate import tabulate

        markdown.write_text(tabulate(_cells(rows, columns), headers=columns, tablefmt="github")
                            + "\n", encoding="utf-8")
    shown = [c for c in columns if c not in TERMINAL_HIDDEN]  # the rest: --out, --markdown
    _table(title, shown, _cells(rows, shown))
    for table in after:
        _table(*table)


TERMINAL_HIDDEN = {"BLEU-2", "BLEU-3", "CE-P", "CE-R", "chance_R@5", "positives"}
"""Columns left out of the terminal table so that it fits 80 columns."""


def _cells(rows: list[dict], columns: list[str]) -> list[list[str]]:
    return [["n/a" if row[c] is None else f"{row[c]:.3f}" if isinstance(row[c], float)
             else str(row[c]) for c in columns] for row in rows]


def _diagnosis_rows(checkpoint: Path, records, split: str, language: str | None,
                    modality: str | None, label: str | None, plots: Path | None):
    """Rows of every diagnosis method and the few-shot curve; ROC and curve plots to `plots`."""
    from m3fm.diagnosis.evaluation import evaluate_diagnosis, recorded_label
    from m3fm.diagnosis.zeroshot import resolve_labels
    from m3fm.generation import load

    model = load(checkpoint)
    modality = model.modality(modality)
    if label is None:
        label = recorded_label(modality, records)
    else:
        resolve_labels(modality, [label])
    result = evaluate_diagnosis(model, records, modality=modality, label=label, split=split,
                                languages=[language] if language else None)
    if plots is not None:
        from m3fm.diagnosis.metrics import plot_few_shot, plot_roc

        plot_roc(result.curves, f"ROC, {label} on {split}", plots / "roc.png")
        plot_few_shot(result.few_shot, {"chance": 0.5}, f"Linear probe, {label} on {split}",
                      plots / "few-shot.png")
    return result.rows, result.few_shot


def _retrieval_rows(checkpoint: Path, records, split: str, language: str | None,
                    data_dir: Path) -> list[dict]:
    from m3fm.alignment.retrieval import evaluate_retrieval, retrieval_sets
    from m3fm.generation import load

    embedder = load(checkpoint)
    languages = (language,) if language is not None else embedder.languages
    sets = retrieval_sets(records, split=split, modalities=embedder.modalities,
                          languages=languages)
    if not sets:
        raise UsageError(
            f"split {split!r} of {data_dir} has no images of {', '.join(embedder.modalities)} "
            f"with reports in {', '.join(languages)}"
        )
    return evaluate_retrieval(sets, embedder)


def _system_name(checkpoint: Path) -> str:
    """A report model's name in result tables: its recipe's name, else its directory."""
    from m3fm.checkpoint import read_metadata

    try:
        return read_metadata(checkpoint)["task"]["recipe"]["name"]
    except (M3fmError, KeyError, TypeError):
        return str(checkpoint)


@cli.command()
@click.option("--checkpoint", required=True, type=click.Path(path_type=Path, exists=True),
              help="Model directory.")
@click.option("--plugin", "modality", help="Modality of the images in PATHS.")
@click.option("--lang", "language", help="Language of the reports in --texts.")
@click.option("--texts", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="A text file with one report per line, embedded instead of images.")
@click.option("--out", type=PathArg, help="Write a .safetensors file instead of JSON Lines.")
@click.argument("paths", nargs=-1, type=PathArg)
def embed(checkpoint: Path, modality: str | None, language: str | None, texts: Path | None,
          out: Path | None, paths: tuple[Path, ...]) -> None:
    """Embed images (PATHS) or reports (--texts with --lang) into the shared space.

    Vectors are L2-normalised. Images that fail to load are reported and left out; the exit
    code is then 1, after the others are written.
    """
    from m3fm.generation import load

    if bool(paths) == bool(texts):
        raise UsageError("give either image PATHS or --texts FILE")
    embedder = load(checkpoint)
    failed: list[str] = []
    if texts is not None:
        if language is None:
            raise UsageError("--texts needs --lang")
        inputs = [line for line in texts.read_text(encoding="utf-8").splitlines() if line.strip()]
        vectors = embedder.embed_texts(inputs, lang=language)
    else:
        inputs, vectors, failed = _embed_files(embedder, modality, paths)
    if out is not None:
        from safetensors.torch import save_file

        save_file({"embeddings": vectors.contiguous()}, str(out),
                  metadata={"inputs": json.dumps(inputs, ensure_ascii=False)})
        click.echo(f"wrote {len(inputs)} embeddings of dimension {vectors.shape[1]} to {out}")
    else:
        for item, vector in zip(inputs, vectors.tolist(), strict=True):
            click.echo(json.dumps({"input": item, "embedding": vector}, ensure_ascii=False))
    for message in failed:
        click.echo(f"m3fm: error: {message}", err=True)
    if failed:
        sys.exit(1)


def _embed_files(embedder, modality: str | None, paths: tuple[Path, ...]):
    """Embed every readable input; the others are returned as one-line errors."""
    from m3fm.imaging import preprocess
    from m3fm.inputs import collect_inputs
    from m3fm.progress import track

    modality = embedder.modality(modality)
    spec = get_registry().modality(modality)
    inputs, tensors, failed = [], [], []
    for path in track(collect_inputs(spec, paths), "loading"):
        try:
            tensors.append(preprocess(spec, path))
            inputs.append(str(path))
        except M3fmError as exc:
            failed.append(str(exc))
    return inputs, embedder.embed_images(tensors, modality=modality), failed


# --- entry point ---------------------------------------------------------------------------


def _fail(message: str, code: int) -> None:
    click.echo(f"m3fm: error: {' '.join(message.split())}", err=True)
    sys.exit(code)


class _WarningEcho(logging.Handler):
    """Shows m3fm's warnings (skipped rows, unreadable images) on stderr, one line each."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(f"m3fm: warning: {' '.join(record.getMessage().split())}", err=True)


@cli.command()
@click.option("--data", "data_dir", type=click.Path(path_type=Path, file_okay=False),
              envvar="M3FM_DATA", required=True, show_envvar=True,
              help="Folder holding cov-ctr/, covid-cxr/ and iu-xray-reports/.")
@click.option("--split", default="val", show_default=True,
              help="Split to measure on; thresholds are tuned on val (on train when it is val).")
@click.option("--runs", type=PathArg, default=Path("runs"), show_default=True,
              help="Where models are trained, one folder per recipe; finished ones are reused.")
@click.option("--out", type=PathArg, default=Path("results"), show_default=True,
              help="Results folder: results.json, results.md and PNG plots.")
@click.option("--quick", is_flag=True,
              help="Tiny models, few steps, few images: checks the pipeline (CI), not quality.")
@click.option("--recipe", "recipes", type=click.Path(path_type=Path, dir_okay=False),
              multiple=True,
              help="Also train and measure this recipe file (a plugin's; repeatable): a "
              "generator gets a report table, an alignment model zero-shot diagnosis.")
def benchmark(data_dir: Path, split: str, runs: Path, out: Path, quick: bool,
              recipes: tuple[Path, ...]) -> None:
    """Train (or reuse) every model of the paper's settings and measure them all: report
    generation with baselines, retrieval, and zero-shot, report-based and few-shot diagnosis
    on COV-CTR and covid-cxr with their baselines.
    """
    from m3fm.benchmarks.results import write_results
    from m3fm.benchmarks.suite import Benchmark

    def notify(message: str) -> None:
        click.echo(f"m3fm: {message}", err=True)

    suite = Benchmark(data_dir, runs, split=split, quick=quick, recipes=recipes, notify=notify)
    suite.train()
    paths = write_results(suite.measure(), out)
    click.echo("\n".join(str(path) for path in paths))


def _show_warnings() -> None:
    logger = logging.getLogger("m3fm")
    if not any(isinstance(handler, _WarningEcho) for handler in logger.handlers):
        logger.addHandler(_WarningEcho(level=logging.WARNING))


def main(argv: list[str] | None = None) -> None:
    """Run the CLI, turning every expected failure into one line and an exit code."""
    _show_warnings()
    try:
        code = cli.main(args=argv, prog_name="m3fm", standalone_mode=False)
    except click.UsageError as exc:
        command = exc.ctx.command_path if exc.ctx else "m3fm"
        _fail(f"{exc.format_message()} (see '{command} --help')", exc.exit_code)
    except click.ClickException as exc:
        _fail(exc.format_message(), exc.exit_code)
    except (click.Abort, KeyboardInterrupt):
        _fail("interrupted", 130)
    except M3fmError as exc:
        _fail(str(exc), exc.exit_code)
    except Exception as exc:
        if os.environ.get("M3FM_DEBUG"):
            raise
        _fail(f"internal error: {type(exc).__name__}: {exc}"
              " (set M3FM_DEBUG=1 for the traceback)", 1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":  # `python -m m3fm.cli`, e.g. under torchrun
    main()
