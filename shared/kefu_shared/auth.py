"""Who is calling: bearer tokens (JWT, HS256) with a role, keys rotated by configuration.

Every HTTP endpoint but health, readiness, metrics and the API documents needs a valid token.
A token carries ``sub`` (the user or service), ``role`` and ``exp``, and names its signing key
in the ``kid`` header. ``KEFU_AUTH_KEYS`` holds the keys (JSON ``{"kid": "secret", ...}``);
``KEFU_AUTH_SIGNING_KEY`` names the one that signs new tokens. To rotate: add the new key,
switch the signing key, and remove the old one once its tokens have expired; until then tokens
signed with either key are accepted.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum

import jwt
from fastapi import Depends, HTTPException, Request, status

ALGORITHM = "HS256"


class Role(StrEnum):
    AGENT = "agent"
    SENIOR_AGENT = "senior_agent"
    SUPERVISOR = "supervisor"
    ADMIN = "admin"
    SERVICE = "service"  # machine to machine: other systems, the shop's back office


STAFF = frozenset({Role.AGENT, Role.SENIOR_AGENT, Role.SUPERVISOR, Role.ADMIN})
MANAGERS = frozenset({Role.SUPERVISOR, Role.ADMIN})


@dataclass(frozen=True)
class Principal:
    subject: str
    role: Role


class TokenError(Exception):
    pass


@dataclass(frozen=True)
class KeyRing:
    keys: Mapping[str, str]
    signing_kid: str

    def issue(self, subject: str, role: Role, *, ttl_seconds: int = 3600) -> str:
        if self.signing_kid not in self.keys:
            raise TokenError(f"signing key {self.signing_kid!r} is not configured")
        now = int(time.time())
        claims = {"sub": subject, "role": role.value, "iat": now, "exp": now + ttl_seconds}
        return jwt.encode(
            claims,
            self.keys[self.signing_kid],
            algorithm=ALGORITHM,
            headers={"kid": self.signing_kid},
        )

    def verify(self, token: str) -> Principal:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError as exc:
            raise TokenError(f"malformed token: {exc}") from exc
        secret = self.keys.get(kid) if isinstance(kid, str) else None
        if secret is None:
            raise TokenError("unknown signing key")
        try:
            claims = jwt.decode(
                token, secret, algorithms=[ALGORITHM], options={"require": ["exp", "sub", "role"]}
            )
        except jwt.PyJWTError as exc:
            raise TokenError(str(exc)) from exc
        try:
            role = Role(claims["role"])
        except ValueError as exc:
            raise TokenError(f"unknown role {claims['role']!r}") from exc
        return Principal(subject=str(claims["sub"]), role=role)


def authenticate(keyring: KeyRing) -> Callable[[Request], Awaitable[Principal]]:
    """A FastAPI dependency: the caller's principal, or 401."""

    async def principal(request: Request) -> Principal:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                detail="missing bearer token",
                headers={"WWW-Authenticate": "Bearer"},
            )
        try:
            found = keyring.verify(token)
        except TokenError as exc:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                detail=f"invalid token: {exc}",
                headers={"WWW-Authenticate": "Bearer"},
            ) from exc
        request.state.principal = found
        return found

    return principal


def current_principal(request: Request) -> Principal:
    """The principal the app-wide authentication dependency stored on the request."""
    found = getattr(request.state, "principal", None)
    if not isinstance(found, Principal):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail="not authenticated")
    return found


def requires(*roles: Role) -> Callable[[Principal], Principal]:
    """A route dependency: 403 unless the caller has one of ``roles``."""
    allowed = frozenset(roles)

    def check(principal: Principal = Depends(current_principal)) -> Principal:  # noqa: B008
        if principal.role not in allowed:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                detail=f"role {principal.role.value} may not do this "
                f"(allowed: {', '.join(sorted(r.value for r in allowed))})",
            )
        return principal

    check.kefu_roles = allowed  # type: ignore[attr-defined]  # read by the route audit test
    return check
