"""A :class:`~bench_suite.report.document.Document` as HTML, Markdown or text: layout only.

Every string of a document is data (it may come from a run file) and is escaped here, once, for
its format: HTML through the page template, whose environment escapes every value with
``escape.html_text`` (autoescape on; only the stylesheet, :data:`CSP` and the template's own
macros are markup); Markdown through ``escape.md_text``/``md_cell`` (inert: no live links,
mentions or references from data); text through ``escape.plain_text`` (no control characters).

Every HTML page, report or comparison, is self-contained: one stylesheet inline
(``templates/style.css``), figures as base64 ``data:`` URIs, no script, and the same
Content-Security-Policy forbidding anything else.
"""

from __future__ import annotations

import base64
import functools
from collections.abc import Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any

from bench_suite.report.document import Cell, Code, DisplayTable, Document, Para, Section, Strong
from bench_suite.report.escape import html_text, md_cell, md_text, plain_text

if TYPE_CHECKING:
    import jinja2

__all__ = ["CSP", "to_html", "to_markdown", "to_text"]

#: No network, no scripts, no plugins: a page may show its own inline styles and embedded
#: images, nothing else, so that even an escaping bug could not fetch or run anything.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


# --- HTML -----------------------------------------------------------------------------------


def _finalize(value: Any) -> Any:
    from markupsafe import Markup

    # the one escaping point: every {{ value }} of the template passes here
    return value if isinstance(value, Markup) else Markup(html_text(value))


def _span_kind(span: Any) -> str:
    return "code" if isinstance(span, Code) else "strong" if isinstance(span, Strong) else "text"


def _cell_class(c: Cell) -> str:
    return " ".join(x for x in ("l" if c.left else "", "noisy" if c.noisy else "", c.tone) if x)


@functools.cache
def _environment() -> jinja2.Environment:
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("bench_suite.report", "templates"),
                             autoescape=True, finalize=_finalize, keep_trailing_newline=True,
                             undefined=jinja2.StrictUndefined)
    env.globals.update(zip=zip, kind=_span_kind, cell_class=_cell_class,
                       b64=lambda png: base64.b64encode(png).decode("ascii"))
    return env


@functools.cache
def stylesheet() -> str:
    return resources.files("bench_suite.report").joinpath("templates/style.css").read_text("utf-8")


def to_html(doc: Document) -> str:
    from markupsafe import Markup

    template = _environment().get_template("page.html.j2")
    return template.render(doc=doc, css=Markup(stylesheet()), csp=Markup(CSP))


# --- Markdown -------------------------------------------------------------------------------

_MD_BANNER = {"bad": ":red_circle: **{}**", "good": ":white_check_mark: **{}**",
              "warn": "> :warning: **{}**", "muted": "_{}_"}


def md_code(text: str) -> str:
    """An inline code span: its content is literal, except a backtick (which would end it)."""
    s = plain_text(text).replace("`", "'")
    return f"`{s}`"


def _md_spans(p: Para) -> str:
    out = []
    for s in p.spans:
        if isinstance(s, Code):
            out.append(md_code(s.text))
        elif isinstance(s, Strong):
            out.append(f"**{md_text(s.text)}**")
        else:
            out.append(md_text(s))
    return _MD_BANNER.get(p.tone, "{}").format("".join(out))


def _md_table(t: DisplayTable) -> str:
    head = "| " + " | ".join(md_cell(h) for h in t.header) + " |"
    align = "| " + " | ".join(":--" if x else "--:" for x in t.left_flags()) + " |"
    rows = ["| " + " | ".join(md_cell(c.text) for c in row) + " |" for row in t.rows]
    out = [f"**{md_text(t.title)}**", ""] if t.title else []
    out += [head, align, *rows]
    if t.caption:
        out += ["", f"<sub>{md_text(t.caption)}</sub>"]
    return "\n".join(out)


def _md_section(s: Section, level: int) -> str:
    out = [f"{'#' * level} {md_text(s.title)}"]
    if s.warning:
        out.append(_MD_BANNER["warn"].format(md_text(s.warning)))
    if s.intro:
        out.append(md_text(s.intro))
    out += [f"- {md_text(x)}" for x in s.items]
    if s.figures is not None:
        # relative links: they work where the report folder is browsed (a repository, an
        # artifact); a job summary cannot show local images, so no broken <img> there
        out.append(" · ".join(f"[{md_text(f.title)}](figures/{f.name}.png)" for f in s.figures)
                   or "No figures.")
    out += [_md_table(t) for t in s.tables]
    for title, pairs in s.details:
        out.append(f"- **{md_text(title)}**: " + "; ".join(f"{md_text(k)}: {md_text(v)}" for k, v in pairs))
    out += [md_text(n) for n in s.notes]
    return "\n\n".join(out)


def to_markdown(doc: Document, limit: int | None = None) -> str:
    """GitHub-flavoured Markdown. ``limit``: at most this many characters (a pull-request
    comment holds 65,536): sections are left out from the highest ``priority`` number until the
    rest fits (priority 0 never), and a line names them."""
    title = doc.title + (f": {doc.subject}" if doc.subject else "")
    head = doc.head if doc.summary_head is None else doc.summary_head
    top = "\n\n".join([f"{'#' * doc.level} {md_text(title)}", *(_md_spans(p) for p in head)])
    bodies = {s.id: _md_section(s, doc.level + 1) for s in doc.sections}
    dropped: list[Section] = []
    by_priority = sorted(doc.sections, key=lambda s: -s.priority)
    while limit is not None and sum(len(b) + 2 for b in bodies.values()) + 400 > limit and by_priority:
        victim = by_priority.pop(0)
        if victim.priority == 0:
            break
        dropped.append(victim)
        bodies.pop(victim.id, None)
    parts = [top, *(bodies[s.id] for s in doc.sections if s.id in bodies)]
    if dropped:
        parts.append("_Left out to fit a comment (see index.html): "
                     + ", ".join(md_text(s.title) for s in dropped) + "._")
    if doc.footnote:
        parts.append(f"<sub>{md_text(doc.footnote)}</sub>")
    text = "\n\n".join(parts) + "\n"
    if limit is None or len(text) <= limit:
        return text
    return text[: limit - 40] + "\n\n(truncated)\n"


# --- text -----------------------------------------------------------------------------------


def text_table(t: DisplayTable) -> list[str]:
    """Columns padded to their widest cell, two spaces apart; numbers right-aligned."""
    header = [plain_text(h) for h in t.header]
    rows = [[plain_text(c.text) for c in row] for row in t.rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]
    left = t.left_flags()

    def line(cells: Sequence[str]) -> str:
        return "  ".join(cell.ljust(w) if x else cell.rjust(w)
                         for cell, w, x in zip(cells, widths, left, strict=True)).rstrip()

    out = [plain_text(t.title)] if t.title else []
    out += [line(header), *(line(r) for r in rows)]
    if t.caption:
        out.append(plain_text(t.caption))
    return out


def _text_section(s: Section) -> list[str]:
    # a terminal has no colour nor banner: a warned section shouts its heading, warning beside it
    heading = (f"{s.title.upper()} -- {s.warning}" if s.warning else f"{s.title}:")
    out = [plain_text(heading)]
    if s.intro:
        out.append(plain_text(s.intro))
    for t in s.tables:
        out += text_table(t)
    out += [f"  {plain_text(x)}" for x in s.items]
    for title, pairs in s.details:
        out.append(plain_text(title) + ":")
        out += [f"  {plain_text(k)}: {plain_text(v)}" for k, v in pairs]
    out += [f"  {plain_text(n)}" for n in s.notes]  # under the table, as its remarks
    return out


def to_text(doc: Document) -> str:
    """Plain text for a terminal (figures are left out)."""
    out = []
    if doc.title:
        out.append(plain_text(doc.title + (f": {doc.subject}" if doc.subject else "")))
    for p in doc.head:  # the head lines under the title; each remark apart
        out += [plain_text(p.text)] if p.tone == "meta" else ["", plain_text(p.text)]
    for s in doc.sections:
        out += ["", *_text_section(s)]
    if doc.footnote:
        out += ["", plain_text(doc.footnote)]
    return "\n".join(out).lstrip("\n") + "\n"
