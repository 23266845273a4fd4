"""Turn a trained report model into the bundled default: half-precision weights and a model
card, small enough to ship inside the package (the budget is 25 MB, decimal).

    m3fm train --recipe m3fm-small --data ../shared/data --out runs/m3fm-small
    m3fm evaluate --task report --checkpoint runs/m3fm-small/final \\
        --data ../shared/data/cov-ctr --split val --out runs/m3fm-small/val-report.json
    m3fm evaluate --task diagnosis --plugin cxr --checkpoint runs/m3fm-small/final \\
        --data ../shared/data/covid-cxr --split val --out runs/m3fm-small/val-cxr.json
    m3fm evaluate --task diagnosis --plugin ct --checkpoint runs/m3fm-small/final \\
        --data ../shared/data/cov-ctr --split val --out runs/m3fm-small/val-ct.json
    python -m m3fm.models.package runs/m3fm-small/final core/models/m3fm-small \\
        --results runs/m3fm-small/val-report.json \\
        --diagnosis runs/m3fm-small/val-cxr.json --diagnosis runs/m3fm-small/val-ct.json

Weights are stored as float16 and read back into float32 parameters on load; the memory bank
is float16 already.  The model card is written from the checkpoint's metadata (recipe,
commit, data) and the evaluation results, so it states what was measured, not what was hoped;
the zero-shot diagnosis figures also go into ``validation.json``, by which `m3fm run` marks
the labels they do not vouch for.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import click
from tabulate import tabulate

from m3fm.checkpoint import (
    read_metadata,
    read_safetensors,
    save_tensor_file,
    write_directory_atomically,
)
from m3fm.diagnosis.validation import MIN_AUC, Validation
from m3fm.generation.reporting import ALIGN_DIR

WEIGHT_FILES = ("model.safetensors", f"{ALIGN_DIR}/model.safetensors")
SIZE_BUDGET_MB = 25.0

DATA_LICENCES = (
    ("COV-CTR, as distributed with the M3FM code",
     "CT–English pairs, English–Chinese report pairs, generator text",
     "Apache-2.0 code; images from the COVID-CT collection of figures in COVID-19 papers "
     "(research use)"),
    ("covid-chestxray-dataset, April 2020 snapshot", "X-ray–clinical-note pairs (alignment)",
     "per image, mostly CC BY and CC BY-NC-SA"),
    ("IU X-ray reports (Open-i, R2Gen annotation)", "English generator text",
     "Open-i terms of the Indiana University collection"),
)
"""(data set, what it trained, licence) of the m3fm-small recipe's data."""


def half_precision_copy(source: Path, target: Path) -> None:
    """Copy a report-model directory, storing its weight files in float16."""
    # copyfile, not copy2: a copy gets the umask's mode, not a source file's 0600
    shutil.copytree(source, target, dirs_exist_ok=True, copy_function=shutil.copyfile,
                    ignore=shutil.ignore_patterns("training_state*"))
    for name in WEIGHT_FILES:
        tensors = read_safetensors(source / name)
        half = {key: value.half() if value.is_floating_point() else value
                for key, value in tensors.items()}
        save_tensor_file(half, target / name, metadata={"format": "pt"})


def directory_size_mb(directory: Path) -> float:
    """The folder's size in decimal megabytes (10^6 bytes), the unit of the budget."""
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file()) / 1e6


def model_card(metadata: dict, modalities: list[str], results: list[dict], size_mb: float,
               validation: Validation, labels: dict[str, tuple[str, ...]], bridge: str,
               ood: dict | None = None) -> str:
    """The README.md of a bundled model, from its metadata, report rows and diagnosis figures;
    `labels` are the labels each modality declares, `bridge` the one it decodes with, `ood`
    the alignment model's out-of-distribution description (``align/ood.json``), if any."""
    recipe = metadata["task"]["recipe"]
    columns = ["modality", "language", "system", "n", "distinct", "BLEU-4", "ROUGE-L",
               "CIDEr-D", "CE-F1", "CE-F1-positive"]
    table = _table(results, columns)
    diagnosis = _table(list(validation.rows),
                       ["modality", "label", "language", "n", "positives", "auc"])
    languages = recipe["model"]["languages"]
    unvalidated = "\n".join(
        f"- {modality} ({language}): {', '.join(missing)}"
        for modality in modalities for language in languages
        if (missing := validation.unvalidated(modality, language, labels[modality])))
    version, overrides = _recipe_as_shipped(recipe)
    command = " ".join([f"m3fm train --recipe {recipe['name']}", *overrides,
                        f"--data ../shared/data --out runs/{recipe['name']}"])
    return f"""# {recipe['name']} (recipe v{version})

{recipe['description']}.

- **Architecture:** a MultiMedCLIP alignment model (images: {', '.join(modalities)}) and a
  MultiMedLM generator writing {', '.join(recipe['model']['languages'])}, trained on text
  only; image embeddings reach the generator through the `{bridge}` bridge.
- **Produced by:** `{command}`,
  then `python -m m3fm.models.package` (weights stored in float16), at commit
  `{metadata.get('git_commit')}` with m3fm {metadata.get('m3fm_version')} and torch
  {metadata.get('torch_version')}, {metadata.get('created')}; {metadata['step']} generator steps.
- **Size:** {size_mb:.1f} MB, of which the memory bank (used by the `memory` bridge, and to
  tell which modality a language has reports of) holds
  {_bank_sizes(metadata)} training-report embeddings.
{_ood_line(ood)}- **Intended use:** a working default for trying m3fm and for tests. It is
  trained from scratch on about 800 images on a CPU: it is not a clinical tool, and its reports
  must not be used to diagnose anyone.

## Data and licences

{tabulate(DATA_LICENCES, headers=["data", "used for", "licence"], tablefmt="github")}

Some sources are non-commercial: use this model for research and evaluation only.

## Validation scores

Scored by `m3fm evaluate --task report` on the validation split of each data set, beside the
baselines of the same command (see the docs' "Report generation" page for what they are):

{table}

Only CT reports are scored: no data set here pairs chest X-rays with reports (covid-cxr has
clinical notes, IU X-ray reports come without images), so the quality of X-ray reports is
not measured.

## Diagnosis

Zero-shot diagnosis from the image (`m3fm evaluate --task diagnosis`, {validation.split}
split; the label prompts of each language), AUC:

{diagnosis}

A label counts as validated at an AUC of {MIN_AUC} or more. The labels below were measured
under that, or never measured because the data label no such finding; `m3fm run` marks their
probabilities "unvalidated": do not read them as measured.

{unvalidated or "- none"}
"""


NOT_SETTINGS = {"version", "align.checkpoint"}
"""Recipe fields that do not change what is trained: the version number, and the local path
of an alignment model trained from the recipe's own `align.recipe`."""


def _recipe_as_shipped(recipe: dict) -> tuple[int, list[str]]:
    """The version of the shipped recipe of this name and the `--set` options that turn it
    into the recipe the model was trained with: none, and the shipped version, when a model
    trained with overrides has exactly the settings the recipe has since adopted; none, and
    the recorded version, for a recipe that m3fm does not ship."""
    from m3fm.recipes import load_recipe
    from m3fm.registry import ConfigError, UnknownNameError

    trained = _flatten(recipe)
    try:
        shipped = _flatten(load_recipe(recipe["name"]).model_dump(mode="json"))
    except (UnknownNameError, ConfigError):  # a recipe file of its own: nothing to compare
        return recipe["version"], []
    changed = [key for key in trained
               if key not in NOT_SETTINGS and trained[key] != shipped.get(key)]
    overrides = [f"--set {key}={_yaml_value(trained[key])}" for key in changed]
    return (recipe["version"] if changed else shipped["version"]), overrides


def _flatten(tree: dict, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``, the dotted paths `--set` takes."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _yaml_value(value) -> str:
    """A `--set` value (read back as YAML): strings bare, everything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def _ood_line(ood: dict | None) -> str:
    """The card's bullet on the out-of-distribution flag, from ``align/ood.json``."""
    if not ood:
        return ""
    rates = " and ".join(f"{info['val_flagged'] / info['val']:.1%} of {modality} "
                         f"({info['val']})" for modality, info in ood["modalities"].items())
    return (f"- **Out-of-distribution flag:** `{ALIGN_DIR}/ood.safetensors` and "
            f"`{ALIGN_DIR}/ood.json` describe\n  the training images' features per modality, "
            f"with thresholds that flag\n  {rates} validation images (see the docs'\n  "
            f"\"Clinical integration\" page).\n")


def _table(rows: list[dict], columns: list[str]) -> str:
    return tabulate([[f"{row.get(c):.3f}" if isinstance(row.get(c), float) else row.get(c)
                      for c in columns] for row in rows], headers=columns, tablefmt="github")


def _bank_sizes(metadata: dict) -> str:
    """'2,034 en, 1,104 zh (ct/en 1,104, …)' from the generator's training metadata."""
    sizes = metadata["task"].get("memory_bank")
    if not sizes:
        return "an unrecorded number of"
    languages = ", ".join(f"{count:,} {key}" for key, count in sizes.items() if "/" not in key)
    domains = ", ".join(f"{key} {count:,}" for key, count in sizes.items() if "/" in key)
    return f"{languages} ({domains})" if domains else languages


@click.command()
@click.argument("source", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.argument("target", type=click.Path(path_type=Path, file_okay=False))
@click.option("--results", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              required=True, help="JSON rows of `m3fm evaluate --task report --out`.")
@click.option("--diagnosis", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              multiple=True, required=True,
              help="JSON of `m3fm evaluate --task diagnosis --out` (repeatable).")
@click.option("--split", default="val", show_default=True, help="The split they measured.")
def main(source: Path, target: Path, results: Path, diagnosis: tuple[Path, ...],
         split: str) -> None:
    """Package the report model SOURCE as a bundled model in TARGET."""
    from m3fm.registry import get_registry

    metadata = read_metadata(source)
    rows = json.loads(results.read_text())
    modalities = json.loads((source / ALIGN_DIR / "config.json").read_text())["modalities"]
    bridge = json.loads((source / "config.json").read_text())["decode"]["bridge"]
    validation = Validation.from_diagnosis_rows(
        [row for path in diagnosis for row in json.loads(path.read_text())["rows"]], split)
    labels = {m: get_registry().modality_labels(m) for m in modalities}

    def fill(directory: Path) -> None:
        half_precision_copy(source, directory)
        validation.write(directory)
        size = directory_size_mb(directory)
        ood_file = source / ALIGN_DIR / "ood.json"
        ood = json.loads(ood_file.read_text()) if ood_file.is_file() else None
        card = model_card(metadata, modalities, rows, size, validation, labels, bridge, ood)
        (directory / "README.md").write_text(card, encoding="utf-8")

    write_directory_atomically(target, fill)
    size = directory_size_mb(target)
    click.echo(f"packaged {source} into {target}: {size:.1f} MB")
    if size > SIZE_BUDGET_MB:
        raise SystemExit(f"m3fm: error: {target} is {size:.1f} MB, over {SIZE_BUDGET_MB} MB")


if __name__ == "__main__":
    main()
