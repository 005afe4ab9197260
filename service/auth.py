"""Bearer API keys for the /v1 routes, and who is calling (the key's name owns the jobs it creates)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from scoring.errors import AuthenticationError
from service.keys import ANONYMOUS, Principal, find_principal
from service.settings import SettingsDep

# auto_error=False: a missing header must become our AuthenticationError (401 with our body), not
# FastAPI's 403. The scheme object also documents bearer auth in /openapi.json.
bearer_scheme = HTTPBearer(auto_error=False, description="an API key from REWEIGH_API_KEYS")


def require_api_key(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    settings: SettingsDep,
) -> Principal:
    keys = settings.api_key_entries
    if not keys:
        principal = ANONYMOUS  # development without keys (settings refuse this in production)
    else:
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise AuthenticationError("this route needs 'Authorization: Bearer <api key>'")
        found = find_principal(credentials.credentials, keys)
        if found is None:
            raise AuthenticationError("the API key is not valid")
        principal = found
    request.state.principal = principal
    return principal


# FastAPI caches a dependency per request: routes that take a PrincipalDep reuse the router's check.
PrincipalDep = Annotated[Principal, Depends(require_api_key)]
