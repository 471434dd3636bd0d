"""HMAC-SHA256 signatures of outgoing webhook and provider calls (scheme in README.md).

signature = hex(HMAC-SHA256(secret, f"{timestamp}." + body)), sent as ``X-Kefu-Signature:
v1=<hex>`` with ``X-Kefu-Timestamp: <unix seconds>``. The timestamp is inside the MAC so a
captured request cannot be replayed later than the receiver's tolerance.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "X-Kefu-Signature"
TIMESTAMP_HEADER = "X-Kefu-Timestamp"
DELIVERY_ID_HEADER = "X-Kefu-Delivery-Id"
SCHEME = "v1"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The header value for ``body`` sent at ``timestamp`` (unix seconds as a string)."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"{SCHEME}={mac.hexdigest()}"


def verify_signature(
    secret: str,
    timestamp: str,
    body: bytes,
    signature: str,
    tolerance: float = 300.0,
    *,
    now: float | None = None,
) -> bool:
    """True if ``signature`` is ours for this body and timestamp, and the timestamp is fresh.

    Compares in constant time; a malformed timestamp or signature is simply not valid.
    """
    try:
        sent_at = int(timestamp)
    except ValueError:
        return False
    current = time.time() if now is None else now
    if abs(current - sent_at) > tolerance:
        return False
    expected = sign(secret, timestamp, body)
    return hmac.compare_digest(expected.encode(), signature.strip().encode())
