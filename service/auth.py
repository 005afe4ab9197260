"""Bearer API keys for the /v1 routes."""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from scoring.errors import AuthenticationError
from service.settings import SettingsDep

# auto_error=False: a missing header must become our AuthenticationError (401 with our body), not
# FastAPI's 403. The scheme object also documents bearer auth in /openapi.json.
bearer_scheme = HTTPBearer(auto_error=False, description="an API key from REWEIGH_API_KEYS")


def key_matches(given: bytes, keys: list[bytes]) -> bool:
    """Constant time in the key's content: compare fixed-length digests, and always try every key."""
    given_digest = hashlib.sha256(given).digest()
    found = False
    for key in keys:
        found |= hmac.compare_digest(given_digest, hashlib.sha256(key).digest())
    return found


def require_api_key(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    settings: SettingsDep,
) -> None:
    keys = settings.api_key_values
    if not keys:
        return  # development without keys (settings refuse this in production)
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise AuthenticationError("this route needs 'Authorization: Bearer <api key>'")
    if not key_matches(credentials.credentials.encode(), keys):
        raise AuthenticationError("the API key is not valid")
    request.state.authenticated = True
