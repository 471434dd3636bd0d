"""Field-level encryption at rest for personal data (phone, e-mail, address).

AES-256-GCM from ``cryptography``. A stored value reads ``enc:v1:<kid>:<base64 nonce+ciphertext>``,
so every value names the key that sealed it: rotation adds a key and makes it the active one;
old values still decrypt with their own key until they are rewritten. The field name is bound
as associated data, so a ciphertext copied into another field does not decrypt.
"""

from __future__ import annotations

import base64
import inspect
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kefu_shared.documents import Change, Decide, Outcome, Stored, VersionedDocumentStore
from kefu_shared.mongo import Collection, Document
from kefu_shared.outbox import OutboxMessage

PREFIX = "enc:v1:"


class DecryptionError(ValueError):
    pass


def new_key() -> str:
    """A fresh 256-bit key, base64 (for ``KEFU_DATA_KEYS``)."""
    return base64.b64encode(AESGCM.generate_key(bit_length=256)).decode()


@dataclass(frozen=True)
class FieldCipher:
    keys: Mapping[str, str]  # kid -> base64 256-bit key
    active_kid: str

    def __post_init__(self) -> None:
        if self.keys and self.active_kid not in self.keys:
            raise ValueError(f"active data key {self.active_kid!r} is not configured")

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def _aead(self, kid: str) -> AESGCM:
        try:
            return AESGCM(base64.b64decode(self.keys[kid]))
        except KeyError as exc:
            raise DecryptionError(f"data key {kid!r} is not configured") from exc

    def encrypt(self, value: str | None, *, field: str) -> str | None:
        if value is None or not self.enabled or value.startswith(PREFIX):
            return value
        nonce = os.urandom(12)
        sealed = self._aead(self.active_kid).encrypt(nonce, value.encode(), field.encode())
        blob = base64.b64encode(nonce + sealed).decode()
        return f"{PREFIX}{self.active_kid}:{blob}"

    def decrypt(self, value: str | None, *, field: str) -> str | None:
        if value is None or not value.startswith(PREFIX):
            return value  # written before encryption was switched on
        kid, _, blob = value.removeprefix(PREFIX).partition(":")
        raw = base64.b64decode(blob)
        try:
            plain = self._aead(kid).decrypt(raw[:12], raw[12:], field.encode())
        except DecryptionError:
            raise
        except Exception as exc:
            raise DecryptionError(f"{field}: cannot decrypt with key {kid!r}") from exc
        return plain.decode()


def is_encrypted(value: object) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


# -- sealing whole documents ------------------------------------------------------------------


def _at(op: Callable[..., str | None], field: str, value: str) -> str | None:
    return op(value, field=field)


def _walk(node: Any, parts: Sequence[str], op: Callable[[str], str | None]) -> Any:
    """A copy of ``node`` with ``op`` applied to the strings at ``parts`` (``*``: each item)."""
    if not parts:
        return op(node) if isinstance(node, str) and node else node
    head, rest = parts[0], parts[1:]
    if head == "*":
        return [_walk(item, rest, op) for item in node] if isinstance(node, list) else node
    if isinstance(node, dict) and head in node:
        return {**node, head: _walk(node[head], rest, op)}
    return node


@dataclass(frozen=True)
class SealedFields:
    """Which fields of a stored document are sealed, as dotted paths (``*`` for list items).

    E.g. ``("contact.phone", "address.street", "audit.*.before.address.street")``. The path,
    not the list position, is bound as associated data (``<scope>.<path>``), so items may move
    but a value copied into another field does not open. Empty strings and non-strings stay.
    """

    cipher: FieldCipher
    paths: tuple[str, ...]
    scope: str

    def _apply(self, doc: Mapping[str, Any], sealing: bool) -> dict[str, Any]:
        out = dict(doc)
        op = self.cipher.encrypt if sealing else self.cipher.decrypt
        for path in self.paths:
            out = _walk(out, path.split("."), partial(_at, op, f"{self.scope}.{path}"))
        return out

    def seal(self, doc: Mapping[str, Any]) -> dict[str, Any]:
        return self._apply(doc, sealing=True)

    def open(self, doc: Mapping[str, Any]) -> dict[str, Any]:
        return self._apply(doc, sealing=False)


class SealedStore(VersionedDocumentStore):
    """The versioned store with ``fields`` sealed in every write and opened in every read.

    Use cases and ``decide`` functions see plain values; the document holds ``enc:v1:...``.
    Built on the store's public ``load``/``mutate`` only, so the store's internals may change.
    Plain queries on the same collection must open what they read (``fields.open``).
    """

    def __init__(self, collection: Collection, fields: SealedFields, **kwargs: Any) -> None:
        super().__init__(collection, **kwargs)
        self.fields = fields

    def _opened(self, stored: Stored | None) -> Stored | None:
        return replace(stored, state=self.fields.open(stored.state)) if stored else None

    # An event waiting for the relay may carry the same personal data as the document (a
    # contact, an address): its body is sealed whole until the relay opens it to publish.
    def _seal_body(self, body: str) -> str:
        sealed = self.fields.cipher.encrypt(body, field=f"{self.fields.scope}.outbox.body")
        return body if sealed is None else sealed

    def outbox_message(self, item: Document) -> OutboxMessage:
        message = super().outbox_message(item)
        body = self.fields.cipher.decrypt(message.body, field=f"{self.fields.scope}.outbox.body")
        return message if body is None else replace(message, body=body)

    async def load(self, doc_id: str) -> Stored | None:
        return self._opened(await super().load(doc_id))

    async def load_recent(self, doc_id: str) -> Stored | None:
        # Opening a value twice (the read above is opened already) leaves it as it is.
        return self._opened(await super().load_recent(doc_id))

    async def mutate(
        self,
        doc_id: str,
        decide: Decide,
        *,
        message_id: str | None = None,
        expect_new: bool = False,
        hold_due: bool = False,
    ) -> Outcome:
        async def sealed(current: Stored | None) -> Change | None:
            result = decide(self._opened(current))
            change = await result if inspect.isawaitable(result) else result
            if change is None:
                return None
            events = [replace(e, body=self._seal_body(e.body)) for e in change.events]
            return Change(self.fields.seal(change.state), events)

        outcome = await super().mutate(
            doc_id, sealed, message_id=message_id, expect_new=expect_new, hold_due=hold_due
        )
        outcome.stored = self._opened(outcome.stored)
        return outcome


def load_sealed_fields(path: Path, cipher: FieldCipher) -> dict[str, SealedFields]:
    """A service's table of sealed paths (``{"<collection>": ["a.b", ...]}``), data not code."""
    table = json.loads(path.read_text(encoding="utf-8"))
    return {
        collection: SealedFields(cipher, tuple(paths), scope=collection)
        for collection, paths in table.items()
        if not collection.startswith("_")
    }
