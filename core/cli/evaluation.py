"""`m3fm evaluate` and `m3fm benchmark`: models measured on data sets."""

from __future__ import annotations

from pathlib import Path

import click

from m3fm.cli.app import ModelFolder, PathArg, cells, cli, table
from m3fm.cli.models import decoding, repetition_options, report_model
from m3fm.outputs import OutputError, check_output_path, json_text, save_text
from m3fm.registry import M3fmError, UsageError


@cli.command()
@click.option("--checkpoint", "checkpoints", required=True, multiple=True,
              type=ModelFolder(),
              help="Model directory (or a training run's folder, for its final/); repeat it "
              "to compare report models in one table.")
@click.option("--data", "data_dir", required=True, type=click.Path(path_type=Path, exists=True),
              help="Data set folder or file.")
@click.option("--format", "format_name", help="Dataset format; detected when omitted.")
@click.option("--split", default="val", show_default=True, help="Split to evaluate on.")
@click.option("--task", type=click.Choice(["retrieval", "report", "diagnosis"]), required=True)
@click.option("--lang", "language", help="Language to evaluate; default: every language "
              "of the model(s).")
@click.option("--reference-lang", "reference_language",
              help="Report task: score the --lang reports against references in this language, "
              "by their findings (clinical efficacy; overlap scores only where --lang references "
              "exist too); default: --lang.")
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
@repetition_options
@click.option("--plugin", "modality", help="Diagnosis task: modality of the images; default: "
              "the model's only one.")
@click.option("--label", help="Diagnosis task: label to diagnose; default: the modality's "
              "first label that the data set records.")
@click.option("--plots", type=PathArg, help="Diagnosis task: write ROC and few-shot PNGs here.")
def evaluate(checkpoints: tuple[Path, ...], data_dir: Path, format_name: str | None, split: str,
             task: str, language: str | None, reference_language: str | None,
             out: Path | None, markdown: Path | None,
             reports_out: Path | None, baselines: bool, bridge: str | None,
             beams: int | None, memory_temperature: float | None,
             repetition_penalty: float | None, repeated_clauses: str | None,
             modality: str | None, label: str | None, plots: Path | None) -> None:
    """Evaluate models on a data split: retrieval (recall@k, median rank), report
    generation (BLEU-1..4, ROUGE-L, CIDEr-D and clinical-efficacy P/R/F1, beside baselines) or
    diagnosis (zero-shot from images and reports, few-shot probes, chance; AUC, F1, accuracy).
    """
    from m3fm.data import read_records
    from m3fm.registry import get_registry

    for option, path in (("--out", out), ("--markdown", markdown), ("--reports", reports_out)):
        if path is not None:
            check_output_path(path, option)  # before hours of evaluation, not after
    for code in (language, reference_language):
        if code is not None:
            get_registry().language(code)
    if reference_language is not None and (task != "report" or language is None):
        raise UsageError("--reference-lang goes with --task report and a --lang to write in")
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
            models[name if name not in models else str(path)] = report_model(path)
        for model in models.values():  # each model keeps its own defaults for the rest
            model.decode = decoding(model.decode, bridge, beams, memory_temperature,
                                    repetition_penalty, repeated_clauses)
        result = evaluate_report_models(
            models, records, split=split, languages=[language] if language else None,
            baselines=baselines, reference_language=reference_language,
        )
        rows = rows_for_out = result.rows
        columns = ["modality", "language", "reference_language", "system", "n", "distinct",
                   *REPORT_METRICS]
        title = f"report generation on {split}"
        if reports_out is not None:
            save_text(reports_out, "".join(json_text(entry) + "\n" for entry in result.reports),
                      "--reports")
    if out is not None:
        save_text(out, json_text(rows_for_out, indent=2) + "\n", "--out")
    if markdown is not None:
        from tabulate import tabulate

        save_text(markdown, tabulate(cells(rows, columns), headers=columns, tablefmt="github")
                  + "\n", "--markdown")
    hidden = set(TERMINAL_HIDDEN)  # the rest: --out, --markdown
    if all(row.get("reference_language", row.get("language")) == row.get("language")
           for row in rows):
        hidden.add("reference_language")  # says nothing when every row is scored in its own
    shown = [c for c in columns if c not in hidden]
    table(title, shown, cells(rows, shown))
    for extra in after:
        table(*extra)


TERMINAL_HIDDEN = {"BLEU-2", "BLEU-3", "CE-P", "CE-R", "chance_R@5", "positives"}
"""Columns left out of the terminal table so that it fits 80 columns."""


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

    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} is a file; the benchmark writes a results folder")
    suite = Benchmark(data_dir, runs, split=split, quick=quick, recipes=recipes, notify=notify)
    suite.train()
    written: list[Path] = []

    def publish(results: dict) -> None:  # after each table: a late failure keeps the others
        written[:] = write_results(results, out)

    suite.measure(publish)
    click.echo("\n".join(str(path) for path in written))


