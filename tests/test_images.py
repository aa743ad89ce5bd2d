"""Grid labels: every character of a title or row label is drawn with a real glyph of the default font."""

from PIL import Image, ImageDraw, ImageFont

from guidekit.images import PLAIN, labelled


def _drawn(text: str) -> bytes:
    im = Image.new("L", (60, 16), 0)
    ImageDraw.Draw(im).text((1, 1), text, fill=255, font=ImageFont.load_default())
    return im.tobytes()


def test_labels_never_draw_missing_glyph_boxes():
    box = _drawn("\U0010FFFD")  # a code point no font has
    lacking = [chr(code) for code in PLAIN]
    assert all(_drawn(ch) == box for ch in lacking)  # the table lists glyphs the font lacks...
    assert not any(_drawn(c) == box for ch in lacking for c in ch.translate(PLAIN))  # ...and draws them in ASCII
    img = labelled(Image.new("L", (20, 20)), "prompts × seeds, ∅ → w", ["ε at ᾱ ≤ 0.5"], cell=20)
    plain = labelled(Image.new("L", (20, 20)), "prompts x seeds, null -> w", ["eps at alpha_bar <= 0.5"], cell=20)
    assert img.tobytes() == plain.tobytes()
