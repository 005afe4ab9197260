"""What happens to a request body before a route sees it: the size limit (enforced before JSON parsing,
so a 2 GB POST never gets buffered), and JSON whatever the Content-Type says."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from scoring.errors import RequestTooLargeError
from service.errors import error_response


class BodyLimitMiddleware:
    """Refuses a declared Content-Length over the limit at once; reads an undeclared (chunked) body up
    to the limit and refuses it as soon as it goes over, then replays what it read to the app."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        too_large = RequestTooLargeError(f"request body over the limit of {self.max_bytes} bytes")
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                declared = self.max_bytes + 1
            if declared > self.max_bytes:
                await error_response(too_large)(scope, receive, send)
                return
            await self.app(scope, receive, send)  # the server stops at the declared length
            return
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await error_response(too_large)(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        replay = iter(messages)

        async def replay_receive() -> Message:
            return next(replay, None) or await receive()

        await self.app(scope, replay_receive, send)


class JsonBodyMiddleware:
    """Bodies sent to /v1 are read as JSON whether or not Content-Type says so, as most JSON APIs do:
    `curl -d '{...}'` sends `application/x-www-form-urlencoded`, and FastAPI would otherwise answer
    "Input should be a valid dictionary" without saying why. A body that is not JSON still gets a
    422 naming where the JSON breaks."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope.get("method") in ("POST", "PUT", "PATCH")
            and str(scope.get("path", "")).startswith("/v1/")
        ):
            headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() != b"content-type"]
            declared = dict(scope.get("headers", [])).get(b"content-type", b"")
            if not _is_json(declared):
                # In place, not a copy: outer middleware reads what routing writes into this scope
                # (the metrics' route template).
                scope["headers"] = [*headers, (b"content-type", b"application/json")]
        await self.app(scope, receive, send)


def _is_json(content_type: bytes) -> bool:
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json"))
