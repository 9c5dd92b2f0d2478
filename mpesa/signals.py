"""The one receiver the design asks for (DESIGN.md §3.4): a matched ledger row pays its sale.

It only delegates; all the rules, locks and idempotency live in
`mpesa.services.apply_mpesa_transaction`. QuerySet.update() bypasses this receiver, so code
never changes a transaction's match status that way.
"""

from django.db.models.signals import post_save
from django.dispatch import receiver

from .models import MpesaTransaction
from .services import apply_mpesa_transaction


@receiver(post_save, sender=MpesaTransaction, dispatch_uid="mpesa.apply_matched_transaction")
def apply_matched_transaction(sender, instance: MpesaTransaction, created: bool = False, raw: bool = False,
                              **kwargs) -> None:
    if raw:  # fixture loading: the rows are history, not new money
        return
    if instance.match_status == MpesaTransaction.Match.MATCHED and instance.sale_id and not instance.payment_id:
        apply_mpesa_transaction(transaction_id=instance.pk, sale_id=instance.sale_id,
                                new_row=instance if created else None)
