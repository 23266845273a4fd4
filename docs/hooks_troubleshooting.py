"""MkDocs hook: fill the troubleshooting page from the error catalogue.

The page's hand-written introduction ends in a marker; what follows it (every error class with
its meaning, exit code and fix, then every message the code can raise) is read from the sources
by ``m3fm.error_catalogue`` at each build, so the page cannot fall behind the code.
"""

from __future__ import annotations

from m3fm.error_catalogue import Catalogue, CliFailure, ErrorClass, Message, build_catalogue

PAGE = "troubleshooting.md"
MARKER = "<!-- error catalogue -->"


def on_page_markdown(markdown: str, page, **kwargs) -> str:
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        raise ValueError(f"docs/{PAGE} lost its marker {MARKER}; the catalogue goes there")
    return markdown.replace(MARKER, render(build_catalogue()))


def render(catalogue: Catalogue) -> str:
    """The catalogue as Markdown: an overview of exit codes, then one section per failure."""
    lines = ["## Exit codes", "", "| Exit code | Failure | Means |", "| --- | --- | --- |"]
    rows = [(e.exit_code, f"[{e.name}](#{e.name.lower()})", e.cause) for e in catalogue.errors]
    rows += [(f.exit_code, f"[{f.catches}](#{_anchor(f)})", f.cause)
             for f in catalogue.cli_failures]
    for code, link, cause in sorted(rows, key=lambda row: row[0]):
        lines.append(f"| {code} | {link} | {cause.replace('|', '&#124;')} |")
    lines += ["", "## Errors of m3fm", ""]
    for error in catalogue.errors:
        lines += _error_section(error, catalogue.messages_of(error.name))
    lines += [
        "## Failures of the command line",
        "",
        "What `m3fm` reports when the failure is not one of the errors above.",
        "",
    ]
    for failure in catalogue.cli_failures:
        lines += _failure_section(failure)
    return "\n".join(lines)


def _error_section(error: ErrorClass, messages: list[Message]) -> list[str]:
    kinds = "".join(f", a kind of [{base}](#{base.lower()})" for base in error.bases)
    lines = [f"### {error.name}", "", f"`{error.module}.{error.name}`{kinds}.", ""]
    lines += _explanation(error.cause, error.exit_code, error.fix)
    places: dict[str, list[str]] = {}  # each wording once, with every place that uses it
    for message in messages:
        shown = (_code(message.template) if message.template is not None
                 else f"built at run time by {_code(message.expression)}")
        where = message.module if message.function == "<module>" else (
            f"{message.module}.{message.function}")
        places.setdefault(shown, []).append(f"`{where}`")
    if not places:
        return [*lines, "No message raises this class directly.", ""]
    lines += [f"**Messages** ({len(places)}):", ""]
    lines += [f"- {shown}  \n  from {', '.join(where)}" for shown, where in places.items()]
    return [*lines, ""]


def _failure_section(failure: CliFailure) -> list[str]:
    lines = [f"### {failure.catches} {{#{_anchor(failure)}}}", ""]
    lines += _explanation(failure.cause, failure.exit_code, failure.fix)
    lines += [f"**Message:** {_code(failure.template)}", ""]
    if failure.examples:
        lines += ["For example:", "", "```text", *failure.examples, "```", ""]
    return lines


def _explanation(cause: str, exit_code: int, fix: str) -> list[str]:
    return [f"**What it means:** {cause}", "", f"**Exit code:** {exit_code}", "",
            f"**How to fix it:** {fix}", ""]


def _anchor(failure: CliFailure) -> str:
    return "".join(c if c.isalnum() else "-" for c in failure.catches.lower()).strip("-")


def _code(text: str) -> str:
    """`text` as inline code, even when it holds backticks itself."""
    return f"`` {text} ``" if "`" in text else f"`{text}`"
