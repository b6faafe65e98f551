"""The one writer of docs/benchmarks.md sections, shared by the bench/ scripts (each owns one section).

``publish`` prints a section and puts it into the document; ``write_section`` only puts it there.
"""

from __future__ import annotations

import re
from pathlib import Path

BENCHMARKS_MD = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def write_section(text: str, heading: str) -> None:
    """Replace (or add, before "## Plot") the section under ``heading``, with a blank line before every heading."""
    doc = BENCHMARKS_MD.read_text()
    if heading in doc:
        start = doc.index(heading)
        end = doc.find("\n## ", start + len(heading))
        doc = doc[:start] + text.rstrip("\n") + "\n" + ("\n" + doc[end + 1:] if end != -1 else "")
    elif "## Plot" in doc:
        doc = doc.replace("## Plot", text.rstrip("\n") + "\n\n## Plot", 1)
    else:
        doc = doc.rstrip("\n") + "\n\n" + text
    BENCHMARKS_MD.write_text(re.sub(r"([^\n])\n(## )", r"\1\n\n\2", doc))


def publish(text: str, heading: str) -> int:
    """Print the section and write it into docs/benchmarks.md; returns the script's exit code (0)."""
    print(text)
    write_section(text, heading)
    return 0
