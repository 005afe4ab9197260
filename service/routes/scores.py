"""POST /v1/scores: documents in, difference scores out (micro-batched with concurrent requests)."""

from typing import Annotated

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

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
    ) -> ScoreResponse:
        texts = [d.text for d in body.documents]
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
