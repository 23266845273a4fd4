"""MkDocs hook: the command-line reference shows "None" for options without a default.

click 8.3 marks a missing default with its ``Sentinel.UNSET`` object, and mkdocs-click 0.9
prints that object as it is (mkdocs/mkdocs-click#95, unreleased, reads ``to_info_dict()``
instead).  Until a release has the fix, the rendered tables get the value click itself
reports for such an option, None.
"""

from __future__ import annotations

from typing import Any

UNSET = "<code>Sentinel.UNSET</code>"


def on_page_content(html: str, page: Any, **kwargs: Any) -> str:
    return html.replace(UNSET, "<code>None</code>")
