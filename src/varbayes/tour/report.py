"""The tour's report: sections as small records, rendered to one self-contained HTML page.

A :class:`Section` holds the post's claim, the computed statements (whose numbers are
also kept by name in ``facts``, so that tests can check each against an independent
computation), tables, figures (PNG bytes, embedded as base64 ``data:`` URLs, so the
page needs no network and no other file) and checks (a statement and whether it held).
"""

from __future__ import annotations

import base64
import html
import io
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path

from varbayes._io import atomic_write

__all__ = ["Check", "Figure", "Section", "Table", "figure_png", "render_report", "write_report"]


@dataclass
class Figure:
    """A PNG image (``png`` bytes) and its caption."""

    caption: str
    png: bytes


@dataclass
class Table:
    """A caption, a header row and rows of cells (already formatted strings)."""

    caption: str
    header: list[str]
    rows: list[list[str]]


@dataclass
class Check:
    """A statement the section verified, and whether it held."""

    statement: str
    passed: bool


@dataclass
class Section:
    """One section of the tour: the post's claim and the computation that shows it.

    ``facts`` maps a name to every number the text states (floats, ints or lists of
    them); ``seconds`` is the wall-clock time of the section.
    """

    key: str
    title: str
    claim: str
    text: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    facts: dict = field(default_factory=dict)
    seconds: float = 0.0

    def check(self, statement: str, passed) -> bool:
        """Record a check; return whether it passed."""
        self.checks.append(Check(statement, bool(passed)))
        return bool(passed)


def figure_png(fig, dpi: int = 100) -> bytes:
    """Render a matplotlib figure to PNG bytes and close it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


_CSS = """
body { font: 15px/1.5 system-ui, sans-serif; max-width: 1100px; margin: 24px auto; padding: 0 16px;
       color: #222; }
h1 { margin-bottom: 4px; } h2 { margin-top: 40px; border-bottom: 1px solid #ddd; }
.meta, .time { color: #666; font-size: 13px; }
blockquote { margin: 8px 0; padding: 6px 12px; border-left: 4px solid #4a7bd0;
             background: #f3f6fc; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
figure { margin: 12px 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 13px; color: #555; }
.checks li.ok::marker { content: "\\2713  "; color: #1a7f37; }
.checks li.fail::marker { content: "\\2717  "; color: #c62828; }
.checks li.fail { color: #c62828; font-weight: bold; }
"""


def _table(t: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in t.header)
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in t.rows
    )
    cap = f"<caption>{html.escape(t.caption)}</caption>" if t.caption else ""
    return f"<table>{cap}<tr>{head}</tr>{rows}</table>"


def _figure(f: Figure) -> str:
    data = base64.b64encode(f.png).decode("ascii")
    cap = html.escape(f.caption)
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{cap}">'
        f"<figcaption>{cap}</figcaption></figure>"
    )


def render_report(sections: list[Section], meta: dict) -> str:
    """The report as one HTML string: a header with ``meta`` (version, seeds, timings,
    settings), then each section's claim, text, tables, figures and checks."""
    n_checks = sum(len(s.checks) for s in sections)
    n_failed = sum(not c.passed for s in sections for c in s.checks)
    meta = {**meta, "checks": f"{n_checks - n_failed} of {n_checks} passed"}
    meta.setdefault("python", platform.python_version())
    rows = "".join(
        f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>"
        for k, v in meta.items()
    )
    toc = "".join(
        f'<li><a href="#{s.key}">{html.escape(s.title)}</a> '
        f'<span class="time">({s.seconds:.1f} s)</span></li>'
        for s in sections
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<link rel="icon" href="data:,">',
        "<title>varbayes tour: from variational inference to the VAE</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>From variational inference to the VAE, computed</h1>",
        '<p class="meta">The argument of the post "from Variational Inference to VAE", '
        "section by section, each claim shown by a computation with varbayes. Every number "
        "below was computed when this page was written.</p>",
        f'<table class="meta">{rows}</table>',
        f"<ol>{toc}</ol>",
    ]
    for i, s in enumerate(sections, 1):
        parts.append(f'<h2 id="{s.key}">{i}. {html.escape(s.title)}</h2>')
        parts.append(f"<blockquote>{html.escape(s.claim)}</blockquote>")
        parts += [f"<p>{html.escape(p)}</p>" for p in s.text]
        parts += [_table(t) for t in s.tables]
        parts += [_figure(f) for f in s.figures]
        if s.checks:
            items = "".join(
                f'<li class="{"ok" if c.passed else "fail"}">{html.escape(c.statement)}</li>'
                for c in s.checks
            )
            parts.append(f'<ul class="checks">{items}</ul>')
        parts.append(f'<p class="time">section time {s.seconds:.1f} s</p>')
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(sections: list[Section], meta: dict, path: str | os.PathLike) -> Path:
    """Write :func:`render_report` to ``path`` atomically; return the path."""
    path = Path(path)
    with atomic_write(path) as f:
        f.write(render_report(sections, meta).encode("utf-8"))
    return path
