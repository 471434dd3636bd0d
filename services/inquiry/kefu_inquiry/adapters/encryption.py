"""Field-level encryption at rest of the customer's phone and e-mail in stored inquiries.

Sealed here, at the mapping between the aggregate and its document, so the domain and the use
cases see plain values and every stored copy holds ``enc:v1:<kid>:...``. Without data keys
(``KEFU_DATA_KEYS`` unset) values pass through unchanged; values written before encryption was
switched on still read (``FieldCipher.decrypt`` passes plain values through).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from kefu_shared.crypto import FieldCipher
from kefu_shared.documents import Change, Stored, VersionedDocumentStore
from kefu_shared.mongo import Collection

# (sub-document, field): the personal contact fields of an inquiry.
SEALED = (("contact", "phone"), ("contact", "email"))


def _convert(state: dict[str, Any], op: Callable[[str | None, str], str | None]) -> dict[str, Any]:
    out = dict(state)
    for parent, name in SEALED:
        sub = out.get(parent)
        if isinstance(sub, dict) and sub.get(name) is not None:
            out[parent] = {**sub, name: op(sub[name], f"inquiry.{parent}.{name}")}
    return out


def seal(state: dict[str, Any], cipher: FieldCipher) -> dict[str, Any]:
    return _convert(state, lambda v, f: cipher.encrypt(v, field=f))


def unseal(state: dict[str, Any], cipher: FieldCipher) -> dict[str, Any]:
    return _convert(state, lambda v, f: cipher.decrypt(v, field=f))


class EncryptedStore(VersionedDocumentStore):
    """The versioned store, sealing contact fields on write and opening them on read."""

    def __init__(self, collection: Collection, cipher: FieldCipher, **kwargs: Any) -> None:
        super().__init__(collection, **kwargs)
        self._cipher = cipher

    async def load(self, doc_id: str) -> Stored | None:
        stored = await super().load(doc_id)
        return replace(stored, state=unseal(stored.state, self._cipher)) if stored else None

    async def _write(
        self, doc_id: str, current: Stored | None, change: Change, message_id: str | None
    ) -> Stored | None:
        sealed = Change(seal(dict(change.state), self._cipher), change.events)
        written = await super()._write(doc_id, current, sealed, message_id)
        return replace(written, state=change.state) if written else None
