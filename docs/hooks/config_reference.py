"""MkDocs hook: fills the configuration reference page with `ftlab.config.reference.markdown()`, rendered
from this checkout's registered settings types at build time."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

PAGE = "reference/configuration.md"
MARKER = "<!-- ftlab:config-reference -->"
SRC = Path(__file__).resolve().parents[2] / "src"


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        raise ValueError(f"{PAGE} has lost its marker line {MARKER}")
    if str(SRC) not in sys.path:
        sys.path.insert(0, str(SRC))  # document this checkout's code, not another installed ftlab
    from ftlab.config.reference import markdown as reference

    return markdown.replace(MARKER, reference())
