"""Which of kefu-notifier's personal fields are sealed at rest: ``data/sealed_fields.json``.

The mechanism (AES-GCM per field, key ids and rotation, sealing in the store mapping so use
cases see plain values) is the kernel's ``kefu_shared.crypto``; this is only the table. Reads
that bypass the stores (``DeliveryLog``) leave the sealed fields out of their projection.
"""

from __future__ import annotations

from pathlib import Path

from kefu_shared.crypto import FieldCipher, SealedFields, load_sealed_fields

TABLE = Path(__file__).resolve().parent.parent / "data" / "sealed_fields.json"


def sealed_fields(cipher: FieldCipher, path: Path = TABLE) -> dict[str, SealedFields]:
    return load_sealed_fields(path, cipher)
