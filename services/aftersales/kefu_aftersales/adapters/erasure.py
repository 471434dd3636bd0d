"""Which of kefu-aftersales's data goes when a customer asks to be erased: ``data/erasure.json``.

The mechanism (blank the listed fields, confirm once through the outbox) is the kernel's
``kefu_shared.erasure``, shared by every service.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from kefu_shared.erasure import ERASURES, ErasureRule, blank_customer
from kefu_shared.erasure import erase_customer as _erase_customer
from kefu_shared.erasure import load_rules as _load_rules

SOURCE = "aftersales"
TABLE = Path(__file__).resolve().parent.parent / "data" / "erasure.json"

__all__ = ["ERASURES", "ErasureRule", "blank_customer", "erase_customer", "load_rules"]


def load_rules(path: Path = TABLE) -> list[ErasureRule]:
    return _load_rules(path)


erase_customer = partial(_erase_customer, service=SOURCE)
