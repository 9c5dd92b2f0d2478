"""The PNG preview: drawn from the same rows as the print, one 12 × 24-dot cell per column.

The previews in docs/ are written by the same regeneration switch as the golden files:
    RECEIPTS_REGENERATE_GOLDEN=1 .venv/bin/python -m pytest receipts/tests/test_render_png.py
"""

import io
import os
from pathlib import Path

import pytest
from PIL import Image

from receipts import rendering
from receipts.rendering import CELL_HEIGHT, CELL_WIDTH, PREVIEW_MARGIN, QrCode, layout_receipt, render_png
from receipts.services import build_receipt

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _image(png: bytes) -> Image.Image:
    return Image.open(io.BytesIO(png))


@pytest.mark.parametrize("paper_width,columns", [(58, 32), (80, 48)])
def test_preview_is_as_wide_as_the_printer_head(cash_sale, paper_width, columns):
    receipt = build_receipt(cash_sale.pk)
    image = _image(render_png(receipt, paper_width=paper_width))
    assert image.width == columns * CELL_WIDTH + 2 * PREVIEW_MARGIN  # 384 or 576 dots, plus margins
    text_height = sum(CELL_HEIGHT * (2 if op.double else 1) for op in layout_receipt(receipt, columns)
                      if not isinstance(op, QrCode))
    assert image.height > text_height + 2 * PREVIEW_MARGIN


def test_copy_preview_is_longer_by_its_two_marks(cash_sale):
    original = _image(render_png(build_receipt(cash_sale.pk)))
    copy = _image(render_png(build_receipt(cash_sale.pk, copy=True)))
    assert copy.height - original.height == 3 * CELL_HEIGHT  # one double-height mark, one normal


def test_preview_draws_with_pillows_own_font_when_dejavu_is_missing(cash_sale, monkeypatch):
    monkeypatch.setattr(rendering, "MONOSPACE_FONT", "NoSuchFontInstalled")
    rendering._fonts.cache_clear()
    rendering._glyph.cache_clear()
    try:
        image = _image(render_png(build_receipt(cash_sale.pk)))
    finally:
        rendering._fonts.cache_clear()
        rendering._glyph.cache_clear()
    assert image.width == 48 * CELL_WIDTH + 2 * PREVIEW_MARGIN
    assert image.getextrema() == (0, 255)  # something was drawn


@pytest.mark.skipif(not os.environ.get("RECEIPTS_REGENERATE_GOLDEN"), reason="only when regenerating")
@pytest.mark.parametrize("kind", ["cash", "mpesa"])
def test_write_the_docs_previews(request, kind):
    sale = request.getfixturevalue(f"{kind}_sale")
    (DOCS / f"receipt-{kind}-80mm.png").write_bytes(render_png(build_receipt(sale.pk), paper_width=80))
