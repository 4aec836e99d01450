"""Escaping of text that comes from files (machine names, case ids, failure reasons, paths)
before it goes into HTML or Markdown. Shared by every renderer so that none forgets a case.

A run file is input like any other: a machine named ``<script>`` or a reason holding
``| ](javascript:...)`` must come out as the same visible text, never as markup.
"""

from __future__ import annotations

import html
import re

__all__ = ["html_text", "md_cell", "md_text"]

# Markdown's inline syntax (emphasis, code, strikethrough), table pipes, raw HTML and link
# brackets, and the backslash itself so that the escapes survive. Characters that matter only
# at the start of a line (#, +, -, digits) are left alone: escaped text is never a block start.
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>|~])")


def html_text(value: object) -> str:
    """Text safe inside HTML elements and quoted attribute values."""
    return html.escape(str(value), quote=True)


def md_text(value: object) -> str:
    """Text shown literally by CommonMark/GitHub Markdown: specials backslash-escaped, ``&``
    as an entity (so ``&lt;`` in a file stays those four characters), control characters and
    line breaks turned into spaces (a table row is one line)."""
    s = "".join(ch if ch.isprintable() else " " for ch in str(value))
    return _MD_SPECIAL.sub(r"\\\1", s).replace("&", "&amp;")


def md_cell(value: object) -> str:
    """A Markdown table cell: escaped and never empty (an empty cell can shift columns in
    some renderers)."""
    s = md_text(value)
    return s if s.strip() else "-"
