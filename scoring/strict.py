"""A base for configs: frozen, no unknown keys, and a bad value raises ConfigError.

pydantic wraps every ValueError raised while validating (ConfigError included) into its own
ValidationError; callers of reweigh catch ConfigError (the CLI prints it as one line), so building a
config by hand re-raises the same message as ConfigError. `model_validate` (used by the HTTP layer
for request bodies) keeps pydantic's ValidationError, which FastAPI turns into a 422.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from scoring.errors import ConfigError


def describe_validation_error(exc: ValidationError, model: str) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(x) for x in err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        if where:
            value = err.get("input")
            parts.append(f"{where}={value!r}: {msg}")
        else:
            parts.append(msg)
    return f"invalid {model}: " + "; ".join(parts)


class StrictModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigError(describe_validation_error(exc, type(self).__name__)) from None
