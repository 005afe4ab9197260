"""POST /v1/scores: documents in, difference scores out (micro-batched with concurrent requests).

`?scorer=proxy` answers from the proxy the service was started with (REWEIGH_PROXY): no LM runs,
so it is computed in a worker thread at once rather than queued behind the pair's batches.
"""

import asyncio
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from scoring.errors import ConfigError, RequestTimeoutError
from service.deps import RuntimeDep
from service.fields import CleanStr
from service.schemas import DocumentId, DocumentScore, ScoreResponse, error_responses
from service.settings import Settings, SettingsDep

_ERRORS = error_responses(400, 413, 429, 503)


def build_router(settings: Settings) -> APIRouter:
    """The limits are settings, so the request model is built here: /openapi.json then states them."""

    class ScoreDocument(BaseModel):
        model_config = ConfigDict(extra="forbid")
        id: DocumentId
        text: Annotated[CleanStr, StringConstraints(max_length=settings.max_chars_per_document)]

    class ScoreRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        documents: list[ScoreDocument] = Field(min_length=1, max_length=settings.max_documents_per_request)

    router = APIRouter(prefix="/v1", tags=["scores"])

    @router.post("/scores", response_model=ScoreResponse, responses=_ERRORS, summary="score documents")
    async def score(
        body: ScoreRequest,
        request: Request,
        runtime: RuntimeDep,
        settings: SettingsDep,
        scorer: Annotated[
            Literal["pair", "proxy"], Query(description="pair: the teacher/reference pair; proxy: the distilled proxy")
        ] = "pair",
    ) -> ScoreResponse:
        texts = [d.text for d in body.documents]
        if scorer == "proxy":
            proxy = request.app.state.proxy
            if proxy is None:
                raise ConfigError("scorer=proxy: this service was started without a proxy (REWEIGH_PROXY / --proxy)")
            try:
                results = await asyncio.wait_for(asyncio.to_thread(proxy.score, texts), settings.request_timeout_s)
            except TimeoutError:
                raise RequestTimeoutError(f"the proxy did not answer within {settings.request_timeout_s} s") from None
            fingerprint = proxy.fingerprint
        else:
            # A client that disconnects abandons its queued work, as a timeout does.
            results = await runtime.worker.score(texts, settings.request_timeout_s, request.is_disconnected)
            fingerprint = runtime.engine.fingerprint
        return ScoreResponse(
            fingerprint={**fingerprint.as_dict(), "digest": fingerprint.digest},
            documents=[
                DocumentScore(id=d.id, **r.as_row())  # type: ignore[arg-type]
                for d, r in zip(body.documents, results, strict=True)
            ],
        )

    return router
