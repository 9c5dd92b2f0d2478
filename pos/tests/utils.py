"""Helpers for the till's tests."""

from inventory.models import StockLevel, StockMovement
from pos.models import Payment, Sale, SaleLine, Shop


def written_rows() -> dict:
    """Everything a sale request can write; equal before and after means nothing was written."""
    return {
        "sales": Sale.objects.count(),
        "lines": SaleLine.objects.count(),
        "payments": Payment.objects.count(),
        "movements": StockMovement.objects.count(),
        "stock": sorted(StockLevel.objects.values_list("shop_id", "product_id", "on_hand")),
        "receipt_seqs": sorted(Shop.objects.values_list("pk", "last_receipt_seq")),
    }
