"""Field types shared by request bodies and path parameters: bounded, and always encodable.

JSON may carry a lone surrogate (`"\\ud800"`), which Python decodes into a string that UTF-8 cannot
encode: such a string would fail later, in the tokenizer, SQLite, the file system or the response
(a 500 after the work was done). They are refused here, as a 422 naming the field.
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Path as PathParam
from pydantic import AfterValidator

_SURROGATE = re.compile("[\ud800-\udfff]")


def refuse_surrogates(value: str) -> str:
    found = _SURROGATE.search(value)
    if found is not None:
        raise ValueError(
            f"contains a lone surrogate (U+{ord(found.group()):04X}) at character {found.start()}; "
            "send valid Unicode"
        )
    return value


# A string that UTF-8 can encode (constraints such as max_length go on the field as usual).
CleanStr = Annotated[str, AfterValidator(refuse_surrogates)]

# Job ids are 32 hex digits; longer ones are refused before anything looks them up.
JobId = Annotated[str, PathParam(min_length=1, max_length=64, description="a job id (32 hex digits)")]
