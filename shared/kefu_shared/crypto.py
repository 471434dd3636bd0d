"""Field-level encryption at rest for personal data (phone, e-mail, address).

AES-256-GCM from ``cryptography``. A stored value reads ``enc:v1:<kid>:<base64 nonce+ciphertext>``,
so every value names the key that sealed it: rotation adds a key and makes it the active one;
old values still decrypt with their own key until they are rewritten. The field name is bound
as associated data, so a ciphertext copied into another field does not decrypt.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

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
