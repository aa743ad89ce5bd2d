"""A self-contained HTML report: sections of text, commands, image tables (base64 PNG data URIs) and metric tables."""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from typing import Sequence

import torch
from PIL import Image

from guidekit.images import to_pil

CSS = """body{font-family:system-ui,sans-serif;max-width:1250px;margin:2em auto;padding:0 1em;color:#222}
h2{margin-top:2.2em;border-bottom:1px solid #ccc}table{border-collapse:collapse;margin:.6em 0}
td,th{padding:2px 4px;text-align:center;font-size:80%;font-weight:normal}th{color:#555}
table.metrics td,table.metrics th{border:1px solid #ccc;padding:3px 8px}
img{image-rendering:pixelated;display:block}pre{background:#f4f4f4;padding:.6em;white-space:pre-wrap;
font-size:80%}p.note{color:#666;font-size:85%}"""


def png_bytes(img: Image.Image | torch.Tensor) -> bytes:
    """PNG encoding of a PIL image or a (C, H, W) tensor in [−1, 1]."""
    buf = io.BytesIO()
    (to_pil(img) if isinstance(img, torch.Tensor) else img).save(buf, format="PNG")
    return buf.getvalue()


def img_tag(img: Image.Image | torch.Tensor, alt: str = "", scale: int = 2) -> str:
    """An <img> holding the image as a base64 PNG data URI, shown `scale` times its size."""
    data = png_bytes(img)
    w, h = (img.shape[-1], img.shape[-2]) if isinstance(img, torch.Tensor) else img.size
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return f"<img src='{uri}' width='{w * scale}' height='{h * scale}' alt='{html.escape(alt, quote=True)}'>"


def image_table(rows: Sequence[tuple[str, Sequence]], heads: Sequence[str] = (), scale: int = 2) -> str:
    """A table of images: rows of (label, cells), a cell being an image, text or None (empty); heads above."""
    def cell(c, alt: str) -> str:
        if c is None:
            return "<td></td>"
        return f"<td>{html.escape(c)}</td>" if isinstance(c, str) else f"<td>{img_tag(c, alt, scale)}</td>"

    out = ["<table>"]
    if heads:
        out.append("<tr><th></th>" + "".join(f"<th>{html.escape(h)}</th>" for h in heads) + "</tr>")
    for label, cells in rows:
        alts = [f"{label}, {heads[i] if i < len(heads) else ''}, column {i + 1}" for i in range(len(cells))]
        out.append(f"<tr><th>{html.escape(label)}</th>" + "".join(cell(c, a) for c, a in zip(cells, alts)) + "</tr>")
    return "\n".join(out + ["</table>"])


def metrics_table(rows: Sequence[dict], columns: Sequence[tuple[str, str, str]]) -> str:
    """A bordered table: one row per dict, columns (key, heading, format spec); None shows as –."""
    def fmt(v, spec: str) -> str:
        return "–" if v is None else format(v, spec) if spec else str(v)

    head = "".join(f"<th>{html.escape(h)}</th>" for _, h, _ in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(fmt(r.get(k), s))}</td>" for k, _, s in columns) + "</tr>"
                   for r in rows)
    return f"<table class='metrics'><tr>{head}</tr>{body}</table>"


def commands_block(commands: Sequence[str]) -> str:
    """The commands that reproduce a panel, one a line."""
    return "<pre class='command'>" + "\n".join(html.escape(c) for c in commands) + "</pre>"


@dataclass
class Section:
    """One panel of the report: heading, explanation (HTML), the commands that reproduce it, and its body (HTML)."""

    key: str
    title: str
    intro: str
    commands: list[str]
    body: list[str] = field(default_factory=list)
    seconds: float = 0.0
    cpu_seconds: float = 0.0


def render(title: str, lead: str, sections: Sequence[Section], footer: str) -> str:
    """The whole page as one HTML string."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{CSS}</style></head><body>", f"<h1>{html.escape(title)}</h1>", lead]
    for s in sections:
        parts += [f"<h2 id='{s.key}'>{html.escape(s.title)}</h2>", s.intro,
                  "<p>Reproduce with:</p>", commands_block(s.commands), *s.body,
                  f"<p class='note'>panel time {s.seconds:.1f} s</p>"]
    parts += [footer, "</body></html>"]
    return "\n".join(parts) + "\n"
