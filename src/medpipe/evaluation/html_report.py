"""One self-contained report.html per run: text, tables and figures in a single file.

The file needs nothing else to display: CSS is inline, images are embedded as base64 data URIs,
there is no script and no external URL, so it opens as it is in MLflow's artifact viewer, in a
browser from disk, or attached to an e-mail. The caller composes it from `Section`s (run summary,
data, training curves, test metrics with confidence intervals, operating point, figures...);
every piece of text is HTML-escaped.
"""

from __future__ import annotations

import base64
import csv
import html
import math
import mimetypes
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2em auto;
       max-width: 1100px; padding: 0 1em; color: #1d2330; line-height: 1.45; }
h1 { border-bottom: 2px solid #3b6ea8; padding-bottom: .3em; }
h2 { margin-top: 1.8em; color: #2b4f7a; }
p.meta { color: #667; font-size: .9em; }
table { border-collapse: collapse; margin: .6em 0; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ccd3dd; padding: .3em .7em; text-align: left; }
th { background: #eef2f7; }
tr:nth-child(even) td { background: #f8f9fb; }
pre { background: #f4f6f8; padding: .8em; overflow-x: auto; font-size: .85em; }
.figures { display: flex; flex-wrap: wrap; gap: 1.2em; }
figure { margin: 0; max-width: 100%; }
figure img { max-width: 100%; height: auto; border: 1px solid #e2e6ec; }
figcaption { font-size: .9em; color: #445; margin-top: .3em; }
.missing { color: #a33; font-style: italic; }
"""


@dataclass
class Section:
    """A heading with optional paragraphs, a preformatted block, a table and figures.

    text: paragraphs separated by blank lines; code: shown as is in a monospace block;
    table: rows, the first one the header; images: (caption, path to a PNG/JPEG/SVG file).
    """

    heading: str
    text: str | None = None
    table: Sequence[Sequence[Any]] | None = None
    images: Sequence[tuple[str, str | Path]] = field(default_factory=list)
    code: str | None = None


def format_ci(value: float | None, low: float | None = None, high: float | None = None, digits=3):
    """'0.956 [0.941, 0.969]'; the value alone without an interval, 'n/a' without a value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if low is None or high is None:
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def _cell(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def _data_uri(path: Path) -> str:
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def _paragraphs(text: str) -> list[str]:
    blocks = [b.strip() for b in text.split("\n\n") if b.strip()]
    return [f"<p>{html.escape(b).replace(chr(10), '<br>')}</p>" for b in blocks]


def _table(rows: Sequence[Sequence[Any]]) -> list[str]:
    if not rows:
        return []
    head, *body = rows
    out = ["<table>", "<thead><tr>"]
    out += [f"<th>{html.escape(_cell(c))}</th>" for c in head]
    out.append("</tr></thead><tbody>")
    for row in body:
        out.append("<tr>" + "".join(f"<td>{html.escape(_cell(c))}</td>" for c in row) + "</tr>")
    out.append("</tbody></table>")
    return out


def _figures(images: Sequence[tuple[str, str | Path]]) -> list[str]:
    if not images:
        return []
    out = ['<div class="figures">']
    for caption, path in images:
        path = Path(path)
        cap = html.escape(caption)
        if path.is_file():
            # the data URI is base64 and the alt text escaped: neither can break the attribute
            out.append(
                f'<figure><img src="{_data_uri(path)}" alt="{cap}">'
                f"<figcaption>{cap}</figcaption></figure>"
            )
        else:  # a figure a run could not make (e.g. no Grad-CAM layer) must not sink the report
            out.append(
                f'<figure><p class="missing">{cap}: figure not available '
                f"({html.escape(path.name)})</p></figure>"
            )
    out.append("</div>")
    return out


def render_html(title: str, sections: Sequence[Section], subtitle: str | None = None) -> str:
    """The report as one HTML string."""
    made = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="meta">{html.escape(f"{subtitle} · " if subtitle else "")}generated {made}</p>',
    ]
    for s in sections:
        parts.append(f"<section><h2>{html.escape(s.heading)}</h2>")
        if s.text:
            parts += _paragraphs(s.text)
        if s.code:
            parts.append(f"<pre>{html.escape(s.code)}</pre>")
        if s.table:
            parts += _table(s.table)
        parts += _figures(s.images)
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_html_report(
    path: str | Path, *, title: str, sections: Sequence[Section], subtitle: str | None = None
) -> Path:
    """Write the self-contained report to `path` (parents created) and return it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(title, sections, subtitle), encoding="utf-8")
    return path


def _read_history(path: Path) -> dict[str, list[float]]:
    """history.csv as columns of floats; a value an epoch did not log (empty cell) is NaN."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    columns: dict[str, list[float]] = {}
    for name in rows[0] if rows else []:
        values = []
        for r in rows:
            try:
                values.append(float(r.get(name) or "nan"))
            except ValueError:
                values.append(math.nan)
        columns[name] = values
    return columns


def plot_training_curves(history_csv_path: str | Path, png_path: str | Path) -> Path | None:
    """Losses (train/ and val/) and the validation metrics per epoch, from the trainer's
    history.csv (`callbacks.HistoryWriter`). None when there is no history to draw."""
    history_csv_path, png_path = Path(history_csv_path), Path(png_path)
    if not history_csv_path.is_file():
        return None
    columns = _read_history(history_csv_path)
    if "epoch" not in columns or not columns["epoch"]:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epoch = columns["epoch"]
    losses = [c for c in columns if c.startswith(("train/", "val/")) and c.endswith("loss")]
    # Per-class F1s (val/f1_<class>) would bury the summary metrics; f1_macro and a challenge's
    # f1_score stay. At most 8 lines, so the legend stays readable.
    metrics = [
        c
        for c in columns
        if c.startswith("val/")
        and c not in losses
        and (not c.startswith("val/f1_") or c in ("val/f1_macro", "val/f1_score"))
    ][:8]
    panels = [("Loss", "loss", losses), ("Validation metrics", "value", metrics)]
    panels = [p for p in panels if p[2]]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, (title, ylabel, cols) in zip(axes[0], panels, strict=True):
        for c in cols:
            ax.plot(epoch, columns[c], "o-", ms=3, label=c)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize="x-small", framealpha=0.7)
    fig.tight_layout()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path, dpi=120)
    plt.close(fig)
    return png_path
