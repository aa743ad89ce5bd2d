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
td,th{padding:2px 4px;text-align:center;font-size:80%;font-weight:normal}th{color:#555}td{vertical-align:top}
table.metrics td,table.metrics th{border:1px solid #ccc;padding:3px 8px}
img{image-rendering:pixelated;display:block;margin:0 auto}img.framed{outline:1px solid #777}
div.cap{font-size:70%;color:#444;line-height:1.15;margin-top:1px}
pre{background:#f4f4f4;padding:.6em;white-space:pre-wrap;font-size:80%}p.note{color:#666;font-size:85%}"""
LIGHT = 0.5  # a tile brighter than this on average (in [0, 1]) is framed: it would vanish on the white page


def png_bytes(img: Image.Image | torch.Tensor) -> bytes:
    """PNG encoding of a PIL image or a (C, H, W) tensor in [−1, 1]."""
    buf = io.BytesIO()
    (to_pil(img) if isinstance(img, torch.Tensor) else img).save(buf, format="PNG")
    return buf.getvalue()


def is_light(img: Image.Image | torch.Tensor) -> bool:
    """Whether an image is mostly white (mean above LIGHT), so that it needs a frame on a white page."""
    if isinstance(img, torch.Tensor):
        return float((img.float().clamp(-1, 1).mean() + 1) / 2) > LIGHT
    gray = img.convert("L")
    return sum(gray.getdata()) / (255 * gray.width * gray.height) > LIGHT


def img_tag(img: Image.Image | torch.Tensor, alt: str = "", scale: int = 2, framed: bool = False) -> str:
    """An <img> holding the image as a base64 PNG data URI, shown `scale` times its size, framed by a thin border."""
    data = png_bytes(img)
    w, h = (img.shape[-1], img.shape[-2]) if isinstance(img, torch.Tensor) else img.size
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    frame = " class='framed'" if framed else ""
    return f"<img src='{uri}' width='{w * scale}' height='{h * scale}'{frame} alt='{html.escape(alt, quote=True)}'>"


@dataclass
class Tile:
    """An image cell of image_table: caption lines under it; framed: a thin border (None: when it is mostly white)."""

    image: Image.Image | torch.Tensor
    caption: Sequence[str] = ()
    framed: bool | None = None


def tile_html(t: Tile, alt: str, scale: int) -> str:
    """The <img> of a tile and its caption lines."""
    framed = is_light(t.image) if t.framed is None else t.framed
    caption = "".join(f"<div class='cap'>{html.escape(line)}</div>" for line in t.caption)
    return img_tag(t.image, alt, scale, framed) + caption


def image_table(rows: Sequence[tuple[str, Sequence]], heads: Sequence[str] = (), scale: int = 2) -> str:
    """A table of images: rows of (label, cells), a cell being an image or Tile (mostly white ones framed), text or
    None (empty); heads above."""
    def cell(c, alt: str) -> str:
        if c is None:
            return "<td></td>"
        if isinstance(c, str):
            return f"<td>{html.escape(c)}</td>"
        return f"<td>{tile_html(c if isinstance(c, Tile) else Tile(c), alt, scale)}</td>"

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
