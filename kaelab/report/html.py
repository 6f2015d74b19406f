"""The building blocks of a report page: one self-contained HTML file (inline CSS, figures as
base64 PNG data URIs, one inline script), readable offline and in any browser.

The script writes the page's own check into ``#report-status`` when the page has loaded: how many
of its images decoded (``data-loaded``) and how many did not (``data-failed``).
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d232b;
       background: #f6f7f9; margin: 0; }
main { max-width: 1320px; margin: 0 auto; padding: 18px 28px 40px; }
header { background: #1f3b57; color: #fff; padding: 16px 28px; }
header h1 { margin: 0 0 4px; font-size: 22px; font-weight: 600; }
header .sub { color: #c9d6e3; font-size: 13px; word-break: break-all; }
nav { margin-top: 8px; font-size: 13px; }
nav a { color: #d9e6f2; margin-right: 14px; text-decoration: none; }
nav a:hover { text-decoration: underline; }
section { background: #fff; border: 1px solid #dfe3e8; border-radius: 6px; margin: 16px 0; padding: 12px 18px; }
h2 { font-size: 17px; margin: 2px 0 10px; color: #1f3b57; }
h3 { font-size: 14px; margin: 14px 0 6px; }
.headline { font-size: 17px; font-weight: 600; color: #0f5132; background: #e8f5ee; border-left: 4px solid #2e8b57;
            padding: 8px 12px; border-radius: 4px; margin: 4px 0 10px; }
table { border-collapse: collapse; margin: 6px 0 10px; font-size: 13px; }
th, td { border-bottom: 1px solid #e6e9ee; padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #f0f3f6; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12px; }
td code { word-break: break-all; }
pre { background: #f6f8fa; border: 1px solid #e1e4e8; padding: 10px; overflow: auto; max-height: 520px; }
figure { margin: 10px 0 18px; }
figure img { max-width: 100%; max-height: 680px; width: auto; height: auto; border: 1px solid #e6e9ee;
             background: #fff; }
figcaption { color: #56606b; font-size: 12px; margin-top: 3px; }
.muted { color: #6a737d; }
.ok { color: #1a7f37; font-weight: 600; }
.bad { color: #b42318; font-weight: 600; }
details summary { cursor: pointer; color: #1f3b57; font-weight: 600; margin: 4px 0; }
footer { color: #6a737d; font-size: 12px; margin-top: 14px; }
"""

STATUS_SCRIPT = """
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (im) { return im.complete && im.naturalWidth > 0; }).length;
  var el = document.getElementById("report-status");
  el.setAttribute("data-loaded", String(ok));
  el.setAttribute("data-failed", String(imgs.length - ok));
  el.textContent = "page check: " + ok + " of " + imgs.length + " images loaded";
});
"""


class Raw(str):
    """HTML that a table cell or a section holds as it is (not escaped)."""


def esc(value: Any) -> str:
    return value if isinstance(value, Raw) else html.escape(str(value))


def code(value: Any) -> Raw:
    return Raw(f"<code>{esc(value)}</code>")


def link(href: str, text: Any) -> Raw:
    return Raw(f'<a href="{html.escape(href, quote=True)}">{esc(text)}</a>')


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], numeric: Sequence[int] = ()) -> Raw:
    """A table (no header row when every header is empty); cells are escaped unless ``Raw``; the
    columns in ``numeric`` are right-aligned."""
    head = f"<thead><tr>{''.join(f'<th>{esc(h)}</th>' for h in headers)}</tr></thead>" if any(headers) else ""
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="num">{esc(v)}</td>' if i in numeric else f"<td>{esc(v)}</td>" for i, v in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    return Raw(f"<table>{head}<tbody>{''.join(body)}</tbody></table>")


def png_img(data: bytes, alt: str) -> Raw:
    """An image embedded as a base64 PNG data URI."""
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return Raw(f'<img src="{uri}" alt="{html.escape(alt, quote=True)}" loading="eager">')


def figure_png(data: bytes, caption: Any) -> Raw:
    return Raw(f"<figure>{png_img(data, str(caption))}<figcaption>{esc(caption)}</figcaption></figure>")


def figure_file(path: Path, caption: Any) -> Raw:
    return figure_png(Path(path).read_bytes(), caption)


def figure_of(fig: Any, caption: Any, dpi: int = 100) -> Raw:
    """A matplotlib figure rendered in memory (nothing written to the run dir), then closed."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return figure_png(buf.getvalue(), caption)


def details(summary: str, body: str, open_: bool = False) -> Raw:
    return Raw(f"<details{' open' if open_ else ''}><summary>{esc(summary)}</summary>{body}</details>")


def pre(text: str) -> Raw:
    return Raw(f"<pre>{html.escape(text)}</pre>")


def para(text: Any, cls: str = "") -> Raw:
    return Raw(f'<p class="{cls}">{esc(text)}</p>' if cls else f"<p>{esc(text)}</p>")


def section(anchor: str, title: str, parts: Iterable[str]) -> tuple[str, str, Raw]:
    """(anchor, title, HTML) of one section of the page."""
    return anchor, title, Raw(f'<section id="{anchor}"><h2>{esc(title)}</h2>{"".join(parts)}</section>')


def page(title: str, subtitle: str, sections: Sequence[tuple[str, str, str]]) -> str:
    """The whole page: header with a table of contents, the sections, the status footer."""
    nav = "".join(f'<a href="#{a}">{esc(t)}</a>' for a, t, _ in sections)
    body = "".join(s for _, _, s in sections)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
        f'<header><h1>{esc(title)}</h1><div class="sub">{esc(subtitle)}</div><nav>{nav}</nav></header>'
        f'<main>{body}<footer>written by kaelab.report; <span id="report-status">page check: not run</span>'
        f"</footer></main><script>{STATUS_SCRIPT}</script></body></html>\n"
    )


def h3(text: str) -> Raw:
    return Raw(f"<h3>{esc(text)}</h3>")
