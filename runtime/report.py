"""One self-contained HTML page per run (``--report``): the numbers, and the cases a person should look at first.

Everything is inline (images as data URIs, CSS in the page, no script), so the file can be mailed, archived or
opened on a machine without network. Overlays show the prediction's contour in green and, where an expert mask
exists, the expert's in magenta, on a thumbnail of the image as it is displayed.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from .files import write_text_atomic

PREDICTION_BGR = (0, 200, 0)
EXPERT_BGR = (255, 0, 255)
THUMBNAIL_SIDE = 320


@dataclass
class Case:
    """One image on the page: its thumbnail with contours, a title and the facts beside it."""

    title: str
    thumbnail_jpeg: bytes
    facts: dict[str, Any] = field(default_factory=dict)


def overlay_thumbnail(rgb: np.ndarray, prediction: np.ndarray | None, expert: np.ndarray | None = None) -> bytes:
    """A JPEG thumbnail (longest side ``THUMBNAIL_SIDE``) of ``rgb`` with the masks' outer contours drawn on it."""
    h, w = rgb.shape[:2]
    scale = THUMBNAIL_SIDE / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    thumb = cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), size, interpolation=cv2.INTER_AREA)
    for mask, color in ((expert, EXPERT_BGR), (prediction, PREDICTION_BGR)):
        if mask is None:
            continue
        small = cv2.resize((mask > 0).astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
        contours, _ = cv2.findContours(small, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(thumb, contours, -1, color, 2)
    ok, jpeg = cv2.imencode(".jpg", thumb, [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise ValueError("OpenCV could not encode a report thumbnail")
    return jpeg.tobytes()


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _table(rows: Sequence[dict[str, Any]]) -> str:
    if not rows:
        return ""
    columns = list(rows[0])
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(r.get(c, '')))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222;background:#fafafa}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px} .sub{color:#666;margin-bottom:16px}
table{border-collapse:collapse;font-size:13px;background:#fff} td,th{border:1px solid #ddd;padding:4px 8px;text-align:left}
th{background:#f0f0f0} .grid{display:flex;flex-wrap:wrap;gap:12px}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px;width:330px}
.card img{display:block;max-width:320px;height:auto} .card .t{font-weight:600;margin:6px 0 2px;word-break:break-all}
.card .f{font-size:12px;color:#444} .legend span{display:inline-block;width:14px;height:4px;margin:0 4px 2px 12px}
.plot img{max-width:900px;background:#fff;border:1px solid #ddd}
"""


def write_report(
    path: Path,
    title: str,
    subtitle: str,
    summary: Sequence[dict[str, Any]],
    cases: Sequence[Case] = (),
    cases_heading: str = "",
    table: Sequence[dict[str, Any]] = (),
    table_heading: str = "",
    plot_png: bytes | None = None,
) -> Path:
    """Write the page atomically and return its path."""
    parts = [f"<h1>{html.escape(title)}</h1><div class='sub'>{html.escape(subtitle)}</div>", _table(summary)]
    if plot_png is not None:
        parts.append(f"<div class='plot'><h2>Latency</h2><img alt='latency plot' src='{_data_uri(plot_png, 'image/png')}'></div>")
    if cases:
        legend = ("<div class='legend'>prediction<span style='background:#00c800'></span>"
                  "expert<span style='background:#ff00ff'></span></div>")  # fmt: skip
        cards = "".join(
            f"<div class='card'><img alt='{html.escape(c.title)}' src='{_data_uri(c.thumbnail_jpeg, 'image/jpeg')}'>"
            f"<div class='t'>{html.escape(c.title)}</div><div class='f'>"
            + " · ".join(f"{html.escape(str(k))} {html.escape(str(v))}" for k, v in c.facts.items())
            + "</div></div>"
            for c in cases
        )
        parts.append(f"<h2>{html.escape(cases_heading)}</h2>{legend}<div class='grid'>{cards}</div>")
    if table:
        parts.append(f"<h2>{html.escape(table_heading)}</h2>{_table(table)}")
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body>{''.join(parts)}</body></html>\n")  # fmt: skip
    write_text_atomic(path, page)
    return path
