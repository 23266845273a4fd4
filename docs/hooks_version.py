"""MkDocs hook: pages show the real output of ``m3fm version``, never a typed copy.

The marker line ``<!-- m3fm-version -->`` becomes a console block with what the command prints
when the site is built, so the versions a page quotes (m3fm, the plugin API) follow the code.
"""

from __future__ import annotations

from typing import Any

MARKER = "<!-- m3fm-version -->"


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, f"```console\n$ m3fm version\n{version_output()}```")


def version_output() -> str:
    """What ``m3fm version`` prints in the environment that builds the site."""
    from click.testing import CliRunner

    from m3fm.cli import cli

    result = CliRunner().invoke(cli, ["version"])
    if result.exit_code != 0:
        raise RuntimeError(f"m3fm version failed: {result.output}")
    return result.output
