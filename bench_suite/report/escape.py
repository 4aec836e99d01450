"""Escaping of text that comes from files (machine names, case ids, failure reasons, paths)
before it goes into HTML or Markdown. Shared by every renderer so that none forgets a case.

A run file is input like any other: a machine named ``<script>`` or a reason holding
``| ](javascript:...)`` must come out as the same visible text, never as markup.
"""

from __future__ import annotations

import html
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["csv_frame", "csv_text", "html_text", "md_cell", "md_text", "plain_text"]

# Markdown's inline syntax (emphasis, code, strikethrough), table pipes, raw HTML and link
# brackets, and the backslash itself so that the escapes survive. Characters that matter only
# at the start of a line (#, +, -, digits) are left alone: escaped text is never a block start.
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>|~])")


# GitHub turns bare URLs, www. names, e-mail addresses, @mentions and #123 references (a #
# that starts a word: "cpu#1" is no reference) into live links, and a mention notifies
# someone, wherever a summary is pasted: a word joiner (U+2060, invisible) inside each marker
# keeps the text as it reads but matches none of them.
_JOINER = "\u2060"
_AUTOLINK = re.compile(r"(?i)(?:\b[a-z][a-z0-9+.-]*:/|\bwww\.|@|(?<!\w)#(?=\d))")
# A spreadsheet reads a cell that starts with one of these as a formula (=HYPERLINK(...)).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_text(value: object) -> object:
    """A CSV cell a spreadsheet shows as text: a string that starts like a formula gets a
    leading apostrophe (OWASP's advice); anything else is returned unchanged."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def csv_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with every text column passed through :func:`csv_text` (numbers untouched)."""
    import pandas as pd

    out = frame.copy()
    for col in out.columns:
        if out[col].dtype == object or pd.api.types.is_string_dtype(out[col]):
            out[col] = out[col].map(csv_text)
    return out


def html_text(value: object) -> str:
    """Text safe inside HTML elements and quoted attribute values."""
    return html.escape(str(value), quote=True)


def plain_text(value: object) -> str:
    """Text for a terminal: a terminal is not HTML, but control characters from a file could
    still move the cursor or change colours, so each becomes a space."""
    return "".join(ch if ch.isprintable() else " " for ch in str(value))


def md_text(value: object) -> str:
    """Text shown literally by CommonMark/GitHub Markdown: specials backslash-escaped, ``&``
    as an entity (so ``&lt;`` in a file stays those four characters), control characters and
    line breaks turned into spaces (a table row is one line), and GitHub's auto-links broken
    (see :data:`_AUTOLINK`)."""
    s = _MD_SPECIAL.sub(r"\\\1", plain_text(value)).replace("&", "&amp;")
    return _AUTOLINK.sub(lambda m: m.group(0)[0] + _JOINER + m.group(0)[1:], s)


def md_cell(value: object) -> str:
    """A Markdown table cell: escaped and never empty (an empty cell can shift columns in
    some renderers)."""
    s = md_text(value)
    return s if s.strip() else "-"
