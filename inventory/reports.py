"""Read-only stock figures for the back office: the stock CSV export."""

from .models import StockLevel

STOCK_CSV_HEADER = ["shop", "SKU", "barcode", "product", "unit", "on hand", "reorder level", "low",
                    "price (KES, VAT incl.)", "value at selling price (KES)"]


def stock_csv_rows(*, shop_ids: list[int] | None):
    """Every stock level of the shops given (None: all) as CSV rows, by shop then product, with its
    value at today's selling price (the catalogue keeps no cost price). Streams from a server-side cursor."""
    levels = StockLevel.objects.all()
    if shop_ids is not None:
        levels = levels.filter(shop_id__in=shop_ids)
    rows = levels.order_by("shop__code", "product__name", "product_id").values_list(
        "shop__code", "product__sku", "product__barcode", "product__name", "product__unit", "on_hand",
        "product__reorder_level", "product__price",
    )
    yield STOCK_CSV_HEADER
    for shop, sku, barcode, name, unit, on_hand, reorder_level, price in rows.iterator(chunk_size=2000):
        yield [shop, sku, barcode or "", name, unit, on_hand, reorder_level, "yes" if on_hand <= reorder_level else "",
               price, on_hand * price]
