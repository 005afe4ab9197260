"""API keys and who they are: `REWEIGH_API_KEYS=name:key[:admin],...`, or plain keys.

A job belongs to the name of the key that created it (not to the key itself, so a key can be rotated
by giving the new key the old name). A plain key with no name gets a stable name from its digest,
`key-<8 hex>`, so the jobs it owns stay its own across restarts and reorderings of the list. A key
with the `admin` role sees and manages every job.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass

from scoring.errors import ConfigError

ADMIN_ROLE = "admin"
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's name, and whether it may see every owner's jobs."""

    name: str
    admin: bool = False


# Without configured keys (development only), every caller is this one principal.
ANONYMOUS = Principal("anonymous", admin=True)


@dataclass(frozen=True)
class ApiKey:
    principal: Principal
    digest: bytes  # sha256 of the secret: compared in constant time, the secret is not kept here


def parse_api_key(entry: str, position: int) -> tuple[ApiKey, str]:
    """`key`, `name:key` or `name:key:admin` -> (the key, its secret). ConfigError names the entry
    by position (never by content: it is a secret)."""
    where = f"api key number {position}"
    parts = entry.split(":")
    if len(parts) == 1:
        secret, name, role = parts[0], None, None
    elif len(parts) in (2, 3):
        name, secret = parts[0], parts[1]
        role = parts[2] if len(parts) == 3 else None
        if not _NAME.fullmatch(name):
            raise ConfigError(f"{where}: the name must be 1-64 of A-Z a-z 0-9 _ . - (form name:key[:admin])")
        if role is not None and role != ADMIN_ROLE:
            raise ConfigError(f"{where}: unknown role {role!r} (the only role is {ADMIN_ROLE!r})")
    else:
        raise ConfigError(f"{where}: expected key, name:key or name:key:admin")
    if not secret or any(c.isspace() for c in secret):
        raise ConfigError(f"{where}: the key is empty or contains whitespace")
    digest = hashlib.sha256(secret.encode()).digest()
    name = name or f"key-{digest.hex()[:8]}"
    return ApiKey(Principal(name, admin=role == ADMIN_ROLE), digest), secret


def parse_api_keys(entries: list[str]) -> list[tuple[ApiKey, str]]:
    keys = [parse_api_key(e, i + 1) for i, e in enumerate(entries)]
    names = [k.principal.name for k, _ in keys]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ConfigError(f"api keys: the name(s) {', '.join(duplicated)} are given to more than one key")
    return keys


def find_principal(given: str, keys: list[ApiKey]) -> Principal | None:
    """Constant time in the key's content: compare fixed-length digests, and always try every key."""
    given_digest = hashlib.sha256(given.encode()).digest()
    found: Principal | None = None
    for key in keys:
        if hmac.compare_digest(given_digest, key.digest):
            found = key.principal
    return found
