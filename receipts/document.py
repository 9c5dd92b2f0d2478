"""The receipt document: everything a receipt shows, built once from a sale and rendered many ways."""

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal


@dataclass(frozen=True)
class ReceiptLine:
    name: str
    quantity: int
    unit_price: Decimal
    total: Decimal
    tax_band: str


@dataclass(frozen=True)
class TaxBandTotal:
    """One row of the VAT table: sums of the lines in that band, so the table adds up to the lines."""

    band: str
    label: str
    gross: Decimal
    vat: Decimal
    net: Decimal


@dataclass(frozen=True)
class ReceiptPayment:
    method: str  # pos.models.Payment.Method value
    amount: Decimal
    tendered: Decimal | None = None
    change: Decimal = Decimal("0")
    reference: str = ""
    phone: str = ""  # already masked


@dataclass(frozen=True)
class Receipt:
    sale_id: int
    shop_name: str
    shop_address: str
    shop_phone: str
    kra_pin: str
    till_name: str
    cashier_name: str
    receipt_number: str
    issued_at: datetime  # in Nairobi time
    lines: tuple[ReceiptLine, ...]
    tax_bands: tuple[TaxBandTotal, ...]  # empty when the shop is not VAT registered
    total: Decimal
    vat_total: Decimal
    payments: tuple[ReceiptPayment, ...]
    footer: str
    verify_url: str
    is_copy: bool = False

    @property
    def paid_in_cash(self) -> bool:
        return any(payment.method == "cash" for payment in self.payments)
