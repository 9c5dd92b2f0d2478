"""ESC/POS bytes of a receipt, compared byte for byte with committed golden files.

After an intended change to the layout, regenerate them and look at the diff and the previews:
    RECEIPTS_REGENERATE_GOLDEN=1 .venv/bin/python -m pytest receipts/tests/test_render_escpos.py
"""

import os
from pathlib import Path

import pytest

from receipts.rendering import COPY_MARK, Row, columns_for, layout_receipt, render_escpos, to_printable
from receipts.services import build_receipt

GOLDEN = Path(__file__).parent / "golden"
# 58 mm: a cheap printer with no cutter and no native QR; 80 mm: an Epson with both.
PRINTERS = {58: "POS-5890", 80: "TM-T20II"}

INIT, DRAWER_KICK, PART_CUT, NATIVE_QR, RASTER_IMAGE = b"\x1b@", b"\x1bp\x00", b"\x1dV\x01", b"\x1d(k", b"\x1dv0"


@pytest.mark.parametrize("paper_width", [58, 80])
@pytest.mark.parametrize("kind", ["cash", "mpesa"])
def test_receipt_bytes_match_the_golden_file(request, kind, paper_width):
    sale = request.getfixturevalue(f"{kind}_sale")
    data = render_escpos(build_receipt(sale.pk), paper_width=paper_width, profile=PRINTERS[paper_width],
                         cash_drawer=True)
    golden = GOLDEN / f"{kind}-{paper_width}mm.bin"
    if os.environ.get("RECEIPTS_REGENERATE_GOLDEN"):
        golden.write_bytes(data)
    assert data == golden.read_bytes()


def test_cash_receipt_opens_the_drawer_and_cuts_on_an_80mm_printer(cash_sale):
    data = render_escpos(build_receipt(cash_sale.pk), paper_width=80, profile="TM-T20II", cash_drawer=True)
    assert data.startswith(INIT + DRAWER_KICK)
    assert NATIVE_QR in data
    assert data.endswith(b"\x1bd\x06" + PART_CUT)


def test_mpesa_receipt_does_not_open_the_drawer(mpesa_sale):
    data = render_escpos(build_receipt(mpesa_sale.pk), paper_width=80, profile="TM-T20II", cash_drawer=True)
    assert DRAWER_KICK not in data


def test_reprint_is_marked_copy_and_does_not_open_the_drawer(cash_sale):
    data = render_escpos(build_receipt(cash_sale.pk, copy=True), paper_width=80, profile="TM-T20II",
                         cash_drawer=True)
    assert DRAWER_KICK not in data
    assert data.count(COPY_MARK.encode()) == 2


def test_drawer_stays_shut_when_the_printer_has_none(cash_sale):
    data = render_escpos(build_receipt(cash_sale.pk), paper_width=80, profile="TM-T20II", cash_drawer=False)
    assert DRAWER_KICK not in data


def test_printer_without_a_cutter_ends_with_a_feed_and_prints_the_qr_as_an_image(cash_sale):
    data = render_escpos(build_receipt(cash_sale.pk), paper_width=58, profile="POS-5890")
    assert b"\x1dV" not in data
    assert data.endswith(b"\x1bd\x06")
    assert RASTER_IMAGE in data and NATIVE_QR not in data


@pytest.mark.parametrize("paper_width,profile,columns", [(58, "POS-5890", 32), (80, "TM-T20II", 48),
                                                         (80, "TM-T88V", 42), (80, "default", 48)])
def test_every_line_fits_the_paper_and_amounts_line_up(cash_sale, paper_width, profile, columns):
    assert columns_for(paper_width, profile) == columns
    rows = [op for op in layout_receipt(build_receipt(cash_sale.pk), columns) if isinstance(op, Row)]
    for row in rows:
        assert len(row.text) <= (columns // 2 if row.double else columns), row.text
    item_rows = [row.text for row in rows if row.text.endswith((" A", " B", " E"))]
    assert len(item_rows) == 4
    # Line totals end in the same column, two before the band letter.
    assert {len(text) for text in item_rows} == {columns}
    assert {text[-13:-2].strip() for text in item_rows} == {"232.00", "250.00", "180.00", "299.97"}


def test_characters_outside_the_code_page_degrade_readably(cash_sale):
    assert to_printable("Crème brûlée – “deluxe” 🍮 ‘ok’ Straße…") == 'Creme brulee - "deluxe" ? \'ok\' Strasse...'
    assert to_printable("👍🏽 ❤️") == "? ?"
    data = render_escpos(build_receipt(cash_sale.pk), paper_width=80, profile="TM-T20II")
    assert b'Creme brulee - "deluxe" ?' in data
    assert all(byte < 0x80 for byte in data.split(NATIVE_QR)[0] if byte >= 0x20)
