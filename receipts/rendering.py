"""Receipt renderings. One layout (rows of fixed-width text, and a QR code) feeds the ESC/POS bytes,
the PNG preview and the HTML page, so what the screen shows is what the printer prints."""

import io
import textwrap
import unicodedata
from dataclasses import dataclass
from decimal import Decimal
from functools import cache

import qrcode
import qrcode.image.svg
from django.utils import timezone
from escpos.capabilities import get_profile
from escpos.printer import Dummy
from PIL import Image, ImageDraw, ImageFont

from .document import Receipt

COLUMNS = {58: 32, 80: 48}
# A receipt printer's font A cell is 12 × 24 dots: 48 columns fill an 80 mm head's 576 dots.
CELL_WIDTH, CELL_HEIGHT = 12, 24
PREVIEW_MARGIN = 16
MONOSPACE_FONT = "DejaVuSansMono"  # Debian's fonts-dejavu-core
COPY_MARK = "COPY - REPRINT"
BAND_LABELS = {"A": ("A EX", "A Exempt"), "B": ("B 16%", "B 16%"), "C": ("C 0%", "C 0%"), "E": ("E 8%", "E 8%")}

# Receipt printers only know their code page; everything else is spelt in plain ASCII.
_PLAIN = str.maketrans({
    "\u2013": "-", "\u2014": "-", "\u2212": "-", "\u2018": "'", "\u2019": "'", "\u201a": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u2026": "...", "\u2022": "*", "\u00b7": ".",
    "\u00d7": "x", "\u00a0": " ", "\u00df": "ss", "\u00e6": "ae", "\u00c6": "AE", "\u00f8": "o",
    "\u00d8": "O", "\u0142": "l", "\u0141": "L", "\u0111": "d", "\u0110": "D", "\u20ac": "EUR",
    "\u00a3": "GBP", "\t": " ",
})


def to_printable(text: str) -> str:
    """ASCII a cheap printer prints right: é → e, – → -, “x” → "x", an emoji → ?."""
    if text.isascii() and text.isprintable():
        return text
    text = unicodedata.normalize("NFKD", text.translate(_PLAIN))
    out = []
    for char in text:
        if " " <= char <= "~":
            out.append(char)
        elif unicodedata.category(char) in ("Mn", "Me", "Cf", "Cc") or "\U0001f3fb" <= char <= "\U0001f3ff":
            continue  # accents left over by NFKD, emoji joiners, variation selectors and skin tones
        else:
            out.append("?")
    return "".join(out)


@dataclass(frozen=True)
class Row:
    """One printed line; text never exceeds the columns (half of them when double)."""

    text: str
    align: str = "left"
    bold: bool = False
    double: bool = False


@dataclass(frozen=True)
class QrCode:
    data: str
    size: int  # dots per module


def columns_for(paper_width: int, profile: str) -> int:
    """32 or 48 by paper, fewer when the printer model says so (Epson TM-T88: 42 on 80 mm)."""
    columns = COLUMNS[paper_width]
    escpos_profile = get_profile(profile)
    if escpos_profile.profile_data["media"]["width"]["pixels"] != "Unknown":
        columns = min(columns, escpos_profile.get_columns("a"))
    return columns


def money(amount: Decimal) -> str:
    return f"{amount:,.2f}"


def _pair(left: str, right: str, width: int) -> str:
    space = width - len(right) - 1
    return f"{left[:space]:<{space}} {right}"


def _rows_of(text: str, width: int, **style) -> list[Row]:
    text = to_printable(text)
    if len(text) <= width:
        return [Row(text, **style)]
    return [Row(part, **style) for part in textwrap.wrap(text, width)]


def layout_receipt(receipt: Receipt, columns: int) -> list[Row | QrCode]:
    half = columns // 2
    rule = Row("-" * columns)
    ops: list[Row | QrCode] = []
    ops += _rows_of(receipt.shop_name, half, align="center", bold=True, double=True)
    if receipt.shop_address:
        ops += _rows_of(receipt.shop_address, columns, align="center")
    if receipt.shop_phone:
        ops += _rows_of(f"Tel {receipt.shop_phone}", columns, align="center")
    if receipt.kra_pin:
        ops.append(Row(f"PIN: {to_printable(receipt.kra_pin)}", align="center"))
    if receipt.is_copy:
        ops.append(Row(COPY_MARK, align="center", bold=True, double=True))
    ops.append(rule)

    number, when = f"Receipt: {receipt.receipt_number}", receipt.issued_at.strftime("%d/%m/%Y %H:%M:%S")
    till, cashier = to_printable(f"Till: {receipt.till_name}"), to_printable(f"Cashier: {receipt.cashier_name}")
    for left, right in ((number, when), (till, cashier)):
        if len(left) + len(right) < columns:
            ops.append(Row(_pair(left, right, columns)))
        else:
            ops += [Row(left[:columns]), Row(right[:columns])]
    ops.append(rule)

    # Line amounts sit in fixed right-hand columns at every width, so they line up down the page.
    for line in receipt.lines:
        detail = f"{f'{line.quantity} x {money(line.unit_price)}':>16}{money(line.total):>11} {line.tax_band}"
        name = to_printable(line.name)
        name_width = columns - len(detail) - 1
        if len(name) <= name_width:
            ops.append(Row(f"{name:<{name_width}} {detail}"))
        else:
            ops += _rows_of(name, columns)
            ops.append(Row(f"{detail:>{columns}}"))
    ops.append(rule)
    ops.append(Row(_pair("TOTAL KES", money(receipt.total), half), bold=True, double=True))

    for payment in receipt.payments:
        if payment.method == "cash":
            ops.append(Row(_pair("Cash", money(payment.tendered or payment.amount), columns)))
            ops.append(Row(_pair("Change", money(payment.change), columns)))
        else:
            ops.append(Row(_pair(to_printable(f"M-Pesa {payment.reference}"), money(payment.amount), columns)))
            if payment.phone:
                ops.append(Row(f"  Phone {payment.phone}"))

    if receipt.tax_bands:
        amount_width = min((columns - 5) // 3, 11)
        band_width = columns - 3 * amount_width
        short = band_width < 8
        ops.append(rule)
        ops.append(Row(
            f"{'Band':<{band_width}}{'Gross':>{amount_width}}{'VAT':>{amount_width}}{'Net':>{amount_width}}"
        ))
        for band in receipt.tax_bands:
            label = BAND_LABELS.get(band.band, (band.label, band.label))[0 if short else 1]
            ops.append(Row(
                f"{label[:band_width]:<{band_width}}{money(band.gross):>{amount_width}}"
                f"{money(band.vat):>{amount_width}}{money(band.net):>{amount_width}}"
            ))
        gross = sum((band.gross for band in receipt.tax_bands), Decimal("0"))
        net = sum((band.net for band in receipt.tax_bands), Decimal("0"))
        ops.append(Row(
            f"{'Total':<{band_width}}{money(gross):>{amount_width}}"
            f"{money(receipt.vat_total):>{amount_width}}{money(net):>{amount_width}}",
            bold=True,
        ))
    ops.append(rule)

    if receipt.footer:
        ops += _rows_of(receipt.footer, columns, align="center")
    ops.append(Row(""))
    ops.append(QrCode(receipt.verify_url, size=5 if columns > 32 else 4))
    ops.append(Row(""))  # the native QR command does not end its line
    ops.append(Row("Scan to check this receipt", align="center"))
    if receipt.is_copy:
        ops.append(Row(COPY_MARK, align="center", bold=True))
    return ops


def _difference_text(difference: Decimal) -> str:
    if difference < 0:
        return f"SHORT {money(difference)}"
    if difference > 0:
        return f"OVER +{money(difference)}"
    return "0.00"


def _report_time(moment) -> str:
    return timezone.localtime(moment).strftime("%d/%m/%Y %H:%M")


def layout_shift_report(report: dict, columns: int) -> list[Row]:
    """A shift's X or Z report (pos.services.shift_report) as printed rows, for any paper width:
    every figure is a label and an amount on one line, so nothing needs a table's columns."""
    half = columns // 2
    rule = Row("-" * columns)

    def pair(label: str, amount: str, **style) -> list[Row]:
        label = to_printable(label)
        if len(label) + 1 + len(amount) <= columns:
            return [Row(_pair(label, amount, columns), **style)]
        # Too long for one line on narrow paper: the label wraps, the amount keeps its right edge.
        return _rows_of(label, columns, **style) + [Row(f"{amount:>{columns}}", **style)]

    ops: list[Row] = []
    ops += _rows_of(report["shop"], half, align="center", bold=True, double=True)
    ops.append(Row(f"{report['kind']} REPORT", align="center", bold=True, double=True))
    if report["kind"] == "X":
        ops.append(Row("Shift still open", align="center"))
    ops.append(rule)
    ops += pair(f"Shift #{report['shift_id']}", to_printable(report["till"]))
    ops += pair("Opened", _report_time(report["opened_at"]))
    ops += _rows_of(f"  by {report['opened_by']}", columns)
    if report["closed_at"]:
        ops += pair("Closed", _report_time(report["closed_at"]))
        ops += _rows_of(f"  by {report['closed_by']}", columns)
    ops += pair("Printed", _report_time(report["generated_at"]))
    ops.append(rule)

    for row in report["methods"]:
        ops.append(Row(to_printable(row["label"]).upper(), bold=True))
        for line in row["lines"]:
            ops += pair(line["label"], money(line["amount"]))
        if row["expected"] is not None:
            ops += pair(row["expected_label"], money(row["expected"]), bold=True)
        if row["received"] is not None:
            ops += pair(row["received_label"], money(row["received"]), bold=True)
        if row["difference"] is not None:
            ops += pair("Difference", _difference_text(row["difference"]), bold=True)
        for item in row["attention"]:
            ops += _rows_of(f"{item['title']}: KES {money(item['total'])}", columns)
            for entry in item["items"]:
                when = timezone.localtime(entry["time"]).strftime("%H:%M")
                ops += pair(f" {when} {entry['reference']}", money(entry["amount"]))
                if entry["detail"]:
                    ops += [Row(f"   {part.text}") for part in _rows_of(entry["detail"], columns - 3)]
        ops.append(rule)
    if report["blind"]:
        ops += _rows_of("Blind count: the cash expected is printed once the shift is closed and counted.", columns)
        ops.append(rule)

    sales = report["sales"]
    ops.append(Row("SALES", bold=True))
    ops += pair("Completed", str(sales["completed"]))
    if sales["completed_total"] is not None:
        ops += pair("Completed total", money(sales["completed_total"]))
        ops += pair("VAT in them", money(sales["vat_total"]))
    ops += pair("Cancelled", str(sales["cancelled"]))
    if sales["pending"]:
        ops += pair("Waiting for payment", str(sales["pending"]))
    if report["movements"]:
        ops.append(rule)
        ops.append(Row("PAY-INS AND PAY-OUTS", bold=True))
        for movement in report["movements"]:
            sign = "-" if movement["kind"] == "pay_out" else ""
            when = timezone.localtime(movement["at"]).strftime("%H:%M")
            ops += pair(f"{when} {movement['label']}", f"{sign}{money(movement['amount'])}")
            reason = f"{movement['reason']} ({movement['by']})"
            ops += [Row(f"   {part.text}") for part in _rows_of(reason, columns - 3)]
    if report["close_note"]:
        ops.append(rule)
        ops += _rows_of(f"Note: {report['close_note']}", columns)
    if report["summary"]:
        ops.append(rule)
        ops.append(Row("TO CHECK", bold=True))
        for sentence in report["summary"]:
            ops += _rows_of(f"* {sentence}", columns)
    elif report["balanced"]:
        ops.append(rule)
        ops += _rows_of("Everything balances.", columns, bold=True)
    ops.append(rule)
    if report["kind"] == "Z":
        for signature in ("Cashier", "Manager"):
            ops += [Row(""), Row(_pair(signature, "_" * half, columns))]
    ops.append(Row(""))
    return ops


def render_escpos(receipt: Receipt, *, paper_width: int = 80, profile: str = "default",
                  cash_drawer: bool = False) -> bytes:
    ops = layout_receipt(receipt, columns_for(paper_width, profile))
    # Never kick the drawer for a reprint: no money changes hands.
    kick = cash_drawer and receipt.paid_in_cash and not receipt.is_copy
    return render_escpos_ops(ops, profile=profile, kick_drawer=kick)


def render_escpos_ops(ops: list[Row | QrCode], *, profile: str = "default", kick_drawer: bool = False) -> bytes:
    printer = Dummy(profile=profile)
    printer.hw("INIT")  # clears whatever a previous job left set
    if kick_drawer:
        printer.cashdraw(2)  # first, so the drawer is open while the receipt prints
    align, bold, double = "left", False, False
    for op in ops:
        if isinstance(op, QrCode):
            if align != "center":
                printer.set(align="center")
                align = "center"
            if printer.profile.supports("qrCode"):
                printer.qr(op.data, size=op.size, native=True)
            else:
                # Printers without QR in firmware get it as a raster image: the preview's own pixels.
                printer.image(qr_image(op.data, op.size))
            continue
        if op.double != double:
            printer.set(double_width=op.double, double_height=op.double, normal_textsize=not op.double)
            # The size command (ESC !) also switches bold off.
            double, bold = op.double, False
        if op.bold != bold:
            printer.set(bold=op.bold)
            bold = op.bold
        if op.align != align:
            printer.set(align=op.align)
            align = op.align
        # Text is plain ASCII by now, the same in every code page: sent as is, without the
        # per-character code-page search of python-escpos's text().
        printer._raw(to_printable(op.text).encode("ascii") + b"\n")
    printer.set(align="left", bold=False, normal_textsize=True)
    if printer.profile.supports("paperPartCut") or printer.profile.supports("paperFullCut"):
        printer.cut(mode="PART")
    else:
        # No cutter: feed the last line past the tear bar instead.
        printer.print_and_feed(6)
    return printer.output


@cache
def _fonts() -> dict:
    """Debian's DejaVu Sans Mono when installed, else Pillow's own font (drawn into the same cells)."""
    styles = [(bold, double) for bold in (False, True) for double in (False, True)]
    try:
        return {(bold, double): ImageFont.truetype(f"{MONOSPACE_FONT}{'-Bold' * bold}.ttf", 40 if double else 20)
                for bold, double in styles}
    except OSError:
        return {(bold, double): ImageFont.load_default(size=40 if double else 20) for bold, double in styles}


@cache
def _glyph(char: str, bold: bool, double: bool) -> Image.Image:
    """One character cell, drawn once per process: a preview is then pasted together, not typeset."""
    scale = 2 if double else 1
    cell = Image.new("1", (CELL_WIDTH * scale, CELL_HEIGHT * scale), 0)
    ImageDraw.Draw(cell).text((0, 0), char, font=_fonts()[(bold, double)], fill=1)
    return cell


def qr_image(data: str, size: int) -> Image.Image:
    """The QR code as a printer draws it: `size` dots a module, one module of quiet zone, 1 = black."""
    # A fixed mask: every mask scans, and choosing the "best" of eight costs ~20 ms in pure Python.
    code = qrcode.QRCode(version=None, border=1, error_correction=qrcode.constants.ERROR_CORRECT_L, mask_pattern=0)
    code.add_data(data)
    code.make(fit=True)
    matrix = code.get_matrix()
    modules = Image.frombytes("1", (len(matrix), len(matrix)),
                              bytes(0 if dark else 255 for row in matrix for dark in row), "raw", "L")
    return modules.resize((modules.width * size, modules.height * size), Image.Resampling.NEAREST)


def render_png(receipt: Receipt, *, paper_width: int = 80, profile: str = "default") -> bytes:
    """The receipt as the printer draws it: 12 × 24-dot cells, double rows at twice the size."""
    columns = columns_for(paper_width, profile)
    ops = layout_receipt(receipt, columns)
    images = {id(op): qr_image(op.data, op.size) for op in ops if isinstance(op, QrCode)}
    height = sum(
        images[id(op)].height if isinstance(op, QrCode) else CELL_HEIGHT * (2 if op.double else 1) for op in ops
    )
    width = columns * CELL_WIDTH
    # One bit a dot, like the thermal head: no grey, and a small, quickly written PNG.
    canvas = Image.new("1", (width + 2 * PREVIEW_MARGIN, height + 2 * PREVIEW_MARGIN), 1)
    y = PREVIEW_MARGIN
    for op in ops:
        if isinstance(op, QrCode):
            image = images[id(op)]
            canvas.paste(image, (PREVIEW_MARGIN + (width - image.width) // 2, y))
            y += image.height
            continue
        scale = 2 if op.double else 1
        step = CELL_WIDTH * scale
        text_width = len(op.text) * step
        x = PREVIEW_MARGIN + {"left": 0, "center": (width - text_width) // 2, "right": width - text_width}[op.align]
        for char in op.text:
            if char != " ":
                canvas.paste(0, (x, y), _glyph(char, op.bold, op.double))
            x += step
        y += CELL_HEIGHT * scale
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG", optimize=False, compress_level=1)
    return buffer.getvalue()


def qr_svg(data: str, size: int) -> str:
    code = qrcode.QRCode(version=None, box_size=size, border=1, error_correction=qrcode.constants.ERROR_CORRECT_L,
                         image_factory=qrcode.image.svg.SvgPathImage)
    code.add_data(data)
    code.make(fit=True)
    return code.make_image().to_string(encoding="unicode")
