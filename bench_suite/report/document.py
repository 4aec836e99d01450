"""The one section model that every output builds: reports, comparisons, fleets, the doctor.

Compute first, then render. A builder (``render.sections``, ``comparison.comparison_document``,
``doctor.doctor_document``) turns what was computed into a :class:`Document` of plain strings;
``renderer.py`` lays a document out as HTML, Markdown or text and escapes every string for its
format there, in one place. Nothing in a document is markup: a machine named ``<script>`` or a
reason of ``@someone`` is text, whatever it looks like.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

__all__ = ["TONES", "Cell", "Code", "DisplayTable", "Document", "Figure", "Para", "Section",
           "Span", "Strong", "png_size"]

#: How a paragraph is set apart: ``meta`` (a document's head line), ``muted`` (a side remark),
#: ``good``/``bad``/``warn`` (a banner: the verdict of the whole document, or a warning).
TONES = ("", "meta", "muted", "good", "bad", "warn")


@dataclass(frozen=True)
class Code:
    """Literal text, such as a command line: ``<code>`` in HTML, a code span in Markdown."""

    text: str


@dataclass(frozen=True)
class Strong:
    text: str


Span = str | Code | Strong


@dataclass(frozen=True)
class Para:
    """One paragraph: a run of spans, and its tone (one of :data:`TONES`)."""

    spans: tuple[Span, ...]
    tone: str = ""

    def __post_init__(self) -> None:
        if self.tone not in TONES:
            raise ValueError(f"unknown tone {self.tone!r}; valid: {', '.join(map(repr, TONES))}")

    @property
    def text(self) -> str:
        return "".join(s if isinstance(s, str) else s.text for s in self.spans)


def para(*spans: Span, tone: str = "") -> Para:
    return Para(spans, tone)


@dataclass(frozen=True)
class Cell:
    text: str
    noisy: bool = False  # highlighted: noisy, below the fleet, a straggler
    title: str = ""  # a tooltip in HTML (e.g. a confidence interval); dropped elsewhere
    left: bool = False  # text columns align left, numbers right
    tone: str = ""  # a class in HTML: a comparison's verdict takes its colour


@dataclass(frozen=True)
class DisplayTable:
    title: str
    header: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    caption: str = ""
    left_cols: int = 0  # leading key columns, aligned left (used where there are no rows)
    row_tones: tuple[str, ...] = ()  # a class per row in HTML: the regressions' rows stand out

    def left_flags(self) -> list[bool]:
        """Each column's alignment: its first row's, else the leading key columns."""
        if self.rows:
            return [c.left for c in self.rows[0]]
        return [i < self.left_cols for i in range(len(self.header))]


@dataclass(frozen=True)
class Figure:
    """A drawn figure: embedded in HTML, a link to ``figures/<name>.png`` in Markdown."""

    name: str
    title: str
    caption: str
    png: bytes
    width_px: int
    height_px: int


@dataclass(frozen=True)
class Section:
    id: str
    title: str
    intro: str = ""
    tables: tuple[DisplayTable, ...] = ()
    #: lower numbers survive when a Markdown summary must be shortened
    priority: int = 5
    #: where figures go: None for no place, () for a place with nothing drawn
    figures: tuple[Figure, ...] | None = None
    items: tuple[str, ...] = ()  # literal lines (a command, a case id): a bulleted list
    details: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = field(default=())
    notes: tuple[str, ...] = ()  # plain lines after the tables
    #: about the whole section: a banner under its heading, or on the heading's line in text
    warning: str = ""


@dataclass(frozen=True)
class Document:
    title: str
    sections: tuple[Section, ...]
    subject: str = ""  # after the title in a page's <title> and a Markdown heading
    head: tuple[Para, ...] = ()  # under the title
    #: a Markdown summary's own head, where it differs from the page's (it points to the page)
    summary_head: tuple[Para, ...] | None = None
    nav: bool = False  # a page links its sections at the top
    footnote: str = ""
    level: int = 2  # the Markdown heading level of the title; sections one below


def png_size(png: bytes) -> tuple[int, int]:
    """Width and height in pixels, from a PNG's header (IHDR, bytes 16-24)."""
    if len(png) < 24 or not png.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ValueError("not a PNG image")
    width, height = struct.unpack(">II", png[16:24])
    return int(width), int(height)
