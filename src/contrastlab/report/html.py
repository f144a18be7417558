"""HTML fragments of the report: inlined figures, tables, the page around the sections."""

from __future__ import annotations

import base64
import html
from pathlib import Path

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
h1{margin-bottom:0}nav a{margin-right:1em}table{border-collapse:collapse;margin:1em 0;font-size:.9em}
td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
figure{margin:1em 0}figure img{max-width:100%}figcaption{font-size:.85em;color:#555}.missing{color:#a33}
pre{background:#f7f7f7;padding:1em;overflow:auto;font-size:.8em}.notes li{margin:.3em 0}
td.supported{background:#e3f4e3}td.contradicted{background:#f8e0e0}td.inconclusive{background:#f6f0d8}
.scroll{max-width:100%;overflow-x:auto}
"""


def esc(value) -> str:
    return html.escape(str(value))


class Img:
    """An inlined figure. Its PNG is read when the fragment is turned into text (``str``), not
    when it is made: a worker may still be writing the file while the sections are assembled."""

    def __init__(self, path: Path, alt: str):
        self.path, self.alt = Path(path), alt

    def __str__(self) -> str:
        data = base64.b64encode(self.path.read_bytes()).decode()
        return f'<figure><img alt="{esc(self.alt)}" src="data:image/png;base64,{data}"><figcaption>{esc(self.alt)}</figcaption></figure>'

    def __repr__(self) -> str:
        return f"Img({str(self.path)!r}, {self.alt!r})"


def img(path: Path, alt: str) -> Img:
    return Img(path, alt)


def table(rows: list[dict], columns: list[str] | None = None, cell_class: str | None = None) -> str:
    """Rows of dicts as an HTML table; ``cell_class`` names a column whose value is also its cells' class."""
    if not rows:
        return missing("no data")
    columns = columns or list(rows[0])

    def td(row: dict, column: str) -> str:
        value = row.get(column, "")
        css = f' class="{esc(value)}"' if column == cell_class else ""
        return f"<td{css}>{esc(value)}</td>"

    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(td(r, c) for c in columns) + "</tr>" for r in rows)
    return f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


def missing(what: str) -> str:
    return f"<p class='missing'>{esc(what)}</p>"


def paragraph(text: str) -> str:
    return f"<p>{esc(text)}</p>"


def details(summary: str, body: str) -> str:
    return f"<details><summary>{esc(summary)}</summary>{body}</details>"


def page(title: str, intro: str, sections) -> str:
    """The whole self-contained page: title, one-line description, navigation, sections (their
    figures are read now, so every figure must be on disk)."""
    nav = "".join(f'<a href="#{s.anchor}">{esc(s.title)}</a>' for s in sections)
    body = "".join(f'<section id="{s.anchor}"><h2>{esc(s.title)}</h2>{"".join(map(str, s.body))}</section>' for s in sections)
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{esc(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{esc(title)}</h1><p>{esc(intro)}</p>"
            f"<nav>{nav}</nav>{body}</body></html>")
