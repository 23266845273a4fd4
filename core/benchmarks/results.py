"""The benchmark's results folder: ``results.json`` for machines, ``results.md`` and PNG plots
for people.  The docs' Results page includes ``results.md`` as written, so the published
numbers are never retyped.
"""

from __future__ import annotations

import json
from pathlib import Path

from tabulate import tabulate

from m3fm.checkpoint import atomic_write_text
from m3fm.diagnosis.metrics import plot_few_shot, plot_roc
from m3fm.generation.evaluation import REPORT_METRICS

TITLES = {
    "cov-ctr": "COV-CTR (CT slices): COVID-19 vs not",
    "covid-cxr": "covid-cxr (chest X-rays): COVID-19 vs other findings, split by patient",
}


def write_results(results: dict, out: Path) -> list[Path]:
    """Write ``results.json``, ``results.md`` and the plots into `out`; return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for block in results["diagnosis"]:
        name = _plot_name(block)
        curves = {system: curve for system, curve in block["curves"].items()
                  if system != "chance"}  # its ROC is the diagonal the plot draws anyway
        plot_roc(curves, f"ROC, {block['data']} with {block['model']}",
                 out / f"roc-{name}.png")
        references = {f"{row['method']} ({row['language']})": row["auc"]
                      for row in block["rows"]
                      if row["method"] == "zero-shot image" and row["auc"] is not None}
        references["chance"] = 0.5
        plot_few_shot([{"shots": r["shots"], "auc_mean": r["auc_mean"], "auc_std": r["auc_std"]}
                       for r in block["few_shot"]], references,
                      f"Linear probe AUC by labelled images per class, {name}",
                      out / f"few-shot-{name}.png")
        written += [out / f"roc-{name}.png", out / f"few-shot-{name}.png"]
    atomic_write_text(out / "results.json", json.dumps(results, ensure_ascii=False, indent=1))
    atomic_write_text(out / "results.md", render_markdown(results))
    return [out / "results.json", out / "results.md", *written]


def _extras_note(meta: dict) -> list[str]:
    """A line naming the recipes added with --recipe, which read their own data."""
    extras = meta.get("extra_recipes")
    if not extras:
        return []
    names = ", ".join(f"`{name}`" for name in extras)
    return [f"Added with `--recipe` (a plugin's recipes, measured on the data they read): "
            f"{names}.", ""]


def _skipped_note(meta: dict) -> list[str]:
    """The steps the data or the plugins could not serve, each with its reason."""
    skipped = meta.get("skipped")
    if not skipped:
        return []
    return ["**Not measured** (the data or the installed plugins cannot serve these steps):",
            "", *(f"- {entry['step']}: {entry['reason']}" for entry in skipped), ""]


def render_markdown(results: dict) -> str:
    """The whole report as markdown, tables through tabulate."""
    meta = results["meta"]
    quick = " (quick: tiny models, numbers meaningless)" if meta["quick"] else ""
    lines = [
        f"Split **{meta['split']}**{quick}"
        f" · m3fm {meta['m3fm_version']} (commit `{meta['git_commit'] or 'unknown'}`)"
        f" · {meta['hardware']} · {meta['date']}",
        "",
        f"Reproduce with `{meta['command']}`.",
        "",
        "| phase | time |",
        "|---|---|",
        *(f"| {name} | {_duration(seconds)} |" for name, seconds in meta["timings_s"].items()),
        "",
        *_skipped_note(meta),
        "## Report generation",
        "",
        "COV-CTR CT images → reports. The generators learn from text (zero-shot), plus 10% "
        "(few-shot) or all (supervised) of the training images paired with their reports. "
        "Baselines are computed from the training split (most-frequent report; a random report "
        "of the image's diagnosis; the nearest training report in the shared space).",
        "",
        *_extras_note(meta),
        _table(results["report"], ["language", *_references_column(results["report"]),
                                   "system", "n", "distinct", *REPORT_METRICS]),
        "",
        "## Retrieval",
        "",
        "Image → report and report → image recall among the split's pairs; chance R@5 is "
        "5 / n. No image was ever paired with a Chinese report.",
        "",
        _table(results["retrieval"], ["data", "model", "modality", "language", "direction", "n",
                                      "chance_R@5", "R@1", "R@5", "R@10", "median_rank"]),
        "",
        "## Diagnosis",
        "",
        "AUC from the scores alone; F1 and accuracy at the threshold that maximises F1 on the "
        "tuning split (train when val is evaluated, else val). Zero-shot methods never see a "
        "label; probes and the CNN learn from the training split.",
    ]
    for block in results["diagnosis"]:
        lines += _diagnosis_section(block)
    return "\n".join(lines) + "\n"


def _plot_name(block: dict) -> str:
    return f"{block['data']}-{block['model']}"


def _diagnosis_section(block: dict) -> list[str]:
    name = _plot_name(block)
    rows = block["rows"]
    zero_shot = [r for r in rows if r["method"].startswith("zero-shot") and r["auc"] is not None]
    title = TITLES.get(block["data"], block["data"])
    lines = ["", f"### {title}, model `{block['model']}`", "",
             f"Modality `{block['modality']}`, label `{block['label']}`.", "",
             _table(rows, ["method", "language", "n", "positives", "auc", "f1", "accuracy"])]
    if zero_shot:
        best = max(zero_shot, key=lambda r: r["auc"])
        lines += ["", f"Best zero-shot: **{best['method']} ({best['language']})**, "
                      f"AUC {best['auc']:.3f}."]
    notes = sorted({r["note"] for r in rows if r.get("note")})
    lines += [f"\n{note}." for note in notes]
    lines += ["", f"![ROC curves, {name}](roc-{name}.png)", "",
              "Few-shot linear probe (mean ± std over seeds):", "",
              _table([{"shots": r["shots"], "draws": r["draws"],
                       **{m: mean_std(r, m) for m in ("auc", "f1", "accuracy")}}
                      for r in block["few_shot"]], ["shots", "draws", "auc", "f1", "accuracy"]),
              "", f"![Few-shot curve, {name}](few-shot-{name}.png)"]
    return lines


def mean_std(row: dict, metric: str) -> str:
    """A few-shot row's `metric` as ``mean ± std`` (``n/a`` when undefined)."""
    mean, std = row[f"{metric}_mean"], row[f"{metric}_std"]
    return "n/a" if mean is None else f"{mean:.3f} ± {std:.3f}"


def _references_column(rows: list[dict]) -> list[str]:
    """``reference_language`` when some report rows were held to references in another
    language (a language without image–report pairs of its own), else nothing."""
    across = any(row.get("reference_language", row["language"]) != row["language"]
                 for row in rows)
    return ["reference_language"] if across else []


def _table(rows: list[dict], columns: list[str]) -> str:
    cells = [["n/a" if row.get(c) is None else
              f"{row[c]:.3f}" if isinstance(row[c], float) else str(row[c]) for c in columns]
             for row in rows]
    return tabulate(cells, headers=columns, tablefmt="github")


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s" if minutes else f"{rest} s"
