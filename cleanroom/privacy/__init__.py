"""Privacy of outputs: noise, small-cell suppression, the budget ledger, safe CSV."""

from cleanroom.privacy.export import neutralize_csv_cell, write_safe_csv
from cleanroom.privacy.ledger import BudgetLedger
from cleanroom.privacy.noise import noisy_counts
from cleanroom.privacy.policy import PrivacyPolicy
from cleanroom.privacy.suppression import ProtectedTable, protect_table

__all__ = [
    "BudgetLedger",
    "PrivacyPolicy",
    "ProtectedTable",
    "neutralize_csv_cell",
    "noisy_counts",
    "protect_table",
    "write_safe_csv",
]
