"""Filter stages: each implements ``filter(record) -> bool | (False, reason)``; drops go to the ledger."""
