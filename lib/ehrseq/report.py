"""A self-contained HTML report: tables and figures in one file, nothing fetched.

Figures are embedded as base64 PNG, so ``report.html`` can be mailed or archived alone. Used by
``ehrseq run`` (:mod:`ehrseq.cli`).
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence

import pandas as pd

__all__ = ["figure_html", "table_html", "html_page"]

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 960px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25em 0.6em; text-align: right; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
figure { margin: 1em 0; } figcaption { font-size: 0.9em; color: #555; }
.note { color: #555; font-size: 0.9em; }
"""


def figure_html(fig, caption: str = "", dpi: int = 110) -> str:
    """A matplotlib figure as an ``<figure>`` with an embedded PNG; the figure is closed."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">{cap}</figure>'


def table_html(frame: pd.DataFrame, float_format: str = "{:.3f}", index: bool = False) -> str:
    """A DataFrame as an HTML table (values escaped, floats formatted)."""
    if frame.empty:
        return '<p class="note">(empty)</p>'
    return frame.to_html(
        index=index, escape=True, border=0, float_format=lambda v: float_format.format(v)
    )


def html_page(title: str, sections: Sequence[tuple[str, str]], intro: str = "") -> str:
    """One HTML page: a title, an optional intro paragraph, then ``(heading, html)`` sections."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if intro:
        parts.append(f"<p>{intro}</p>")
    for heading, body in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>\n{body}")
    parts.append("</body></html>")
    return "\n".join(parts)
