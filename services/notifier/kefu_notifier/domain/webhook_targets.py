"""Where a webhook may point: http(s) URLs whose host resolves only to public addresses.

A subscription makes the notifier send requests from inside the shop's network, so a target on
a private, loopback, link-local (cloud metadata at 169.254.169.254) or otherwise non-global
address would let anyone who can create a subscription probe internal systems (SSRF). The
checks here are pure; resolving the host is an adapter's job (``adapters/webhook_http.py``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

ALLOWED_SCHEMES = frozenset({"http", "https"})
MAX_URL_LENGTH = 2048


class TargetRefused(ValueError):
    """The target URL may not be used; the message starts with the field name."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"target_url: {reason}")
        self.reason = reason


@dataclass(frozen=True)
class Target:
    url: str
    scheme: str
    host: str
    port: int


def parse_target(url: str) -> Target:
    """The URL's parts, or TargetRefused for anything but a plain http(s) URL with a host."""
    if len(url) > MAX_URL_LENGTH:
        raise TargetRefused(f"longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise TargetRefused(f"not a valid URL ({exc})") from exc
    scheme = parts.scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        raise TargetRefused(f"scheme {scheme or '(none)'!r} is not allowed; use http or https")
    if not parts.hostname:
        raise TargetRefused("has no host")
    if parts.username is not None or parts.password is not None:
        # Credentials in the URL would be stored and shown; the signature authenticates us.
        raise TargetRefused("must not contain credentials (user:password@)")
    default_port = 443 if scheme == "https" else 80
    return Target(url=url.strip(), scheme=scheme, host=parts.hostname, port=port or default_port)


def address_refusal(address: str) -> str | None:
    """Why a resolved address may not be called, or None if it is a public unicast address."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    except ValueError:
        return f"{address!r} is not an IP address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    if ip.is_loopback:
        return f"{ip} is a loopback address"
    if ip.is_link_local:
        return f"{ip} is a link-local address"
    if ip.is_private:
        return f"{ip} is a private address"
    if ip.is_multicast:
        return f"{ip} is a multicast address"
    if ip.is_unspecified or ip.is_reserved or not ip.is_global:
        return f"{ip} is not a public address"
    return None


def check_addresses(target: Target, addresses: Iterable[str]) -> None:
    """Refuse the target unless it resolved, and every address it resolved to is public.

    Every address, not just the first: a host with one public and one private record would
    otherwise reach the private one whenever the client happens to pick it.
    """
    found = list(addresses)
    if not found:
        raise TargetRefused(f"host {target.host!r} does not resolve")
    for address in found:
        refusal = address_refusal(address)
        if refusal is not None:
            raise TargetRefused(f"host {target.host!r} resolves to {refusal}")
