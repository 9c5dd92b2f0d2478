"""CSV downloads from the back office: streamed row by row, safe to open in a spreadsheet."""

import csv

from django.http import StreamingHttpResponse

# A cell starting with one of these is run as a formula by Excel and LibreOffice.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class _Echo:
    def write(self, value: str) -> str:
        return value


def spreadsheet_safe(value):
    """Text that a spreadsheet would take for a formula ("=HYPERLINK(…)" as a product name) is quoted."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def stream_csv(filename: str, rows) -> StreamingHttpResponse:
    """A download of `rows` (an iterable of lists, the header first) that never holds them all in memory."""
    writer = csv.writer(_Echo())
    response = StreamingHttpResponse(
        (writer.writerow([spreadsheet_safe(value) for value in row]) for row in rows),
        content_type="text/csv; charset=utf-8",
    )
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
