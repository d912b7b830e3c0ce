"""HTTP API of candidate generation: ``GET /users/{user_id}/candidates?n=``.

Run it with ``topicfs serve api`` (uvicorn); the OpenAPI spec is served at ``/openapi.json`` and
browsable at ``/docs``. On a single Redis a request is one EVALSHA on an asyncio client in the server's event
loop (:class:`serving.candidates.AsyncCandidateGenerator`); on a Redis Cluster, or with a generator passed in,
the synchronous generator runs in the thread pool. Errors are JSON ``{"detail": ...}``: invalid parameters get 422 naming the
parameter, an unreachable Redis gets 503, and no error ever answers with a traceback.
"""

# no "from __future__ import annotations": FastAPI reads the endpoint annotations, which use local names

import logging
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from serving.candidates import AsyncCandidateGenerator, CandidateGenerator, CandidateStoreUnavailable, result_json
from topicfs.settings import Settings, get_settings

logger = logging.getLogger(__name__)


class CandidateOut(BaseModel):
    video_id: int = Field(description="candidate video")
    topic_id: int = Field(description="the topic queue it was drawn from")


class TopicOut(BaseModel):
    topic_id: int
    votes: float = Field(description="the user's recent clicks on the topic, or its total clicks for source 'popular'")
    n_candidates: int = Field(description="candidates drawn from this topic's queue")


class CandidatesOut(BaseModel):
    user_id: int
    source: str = Field(description="'history': topics voted by the user's last N1 clicks; 'popular': no history, the most clicked topics; 'none': no topic known")
    topics: list[TopicOut] = Field(description="the top N2 topics, most votes first")
    candidates: list[CandidateOut] = Field(description="at most n videos, deduplicated, none the user clicked")


class ErrorOut(BaseModel):
    detail: str


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("path", "query"))
        parts.append(f"{where or 'request'}: {error.get('msg', 'invalid')} (got {error.get('input')!r})")
    return "invalid request: " + "; ".join(parts)


def create_app(settings: Settings | None = None, generator: CandidateGenerator | None = None) -> FastAPI:
    """The candidate API for ``settings`` (default: the process's settings)."""
    settings = settings or get_settings()
    own_generator = generator is None
    generator = generator or CandidateGenerator.from_settings(settings)
    max_n = settings.serving.max_candidates
    fast: dict[str, AsyncCandidateGenerator] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # the asyncio client belongs to the server's event loop, so it is made (and closed) inside it
        if own_generator and generator.server_side:
            import redis.asyncio as aioredis

            timeout = settings.serving.redis_timeout_s
            client = aioredis.Redis.from_url(settings.redis.url, socket_timeout=timeout, socket_connect_timeout=timeout)
            fast["generator"] = AsyncCandidateGenerator(client, generator)
        try:
            yield
        finally:
            if "generator" in fast:
                await fast.pop("generator").aclose()

    app = FastAPI(
        lifespan=lifespan,
        title="Topic Feature Store: candidate generation",
        version="1.0",
        description=(
            "Candidates for a user from the live topic queues (MTL paper III-B): the topics of the user's last "
            f"N1={settings.serving.recent_clicks} clicked videos vote, the top N2={settings.serving.topics_per_user} "
            "topics share the n candidates by votes; users without history get the popular topics."
        ),
    )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": _validation_message(exc)})

    @app.exception_handler(CandidateStoreUnavailable)
    async def _unavailable(request: Request, exc: CandidateStoreUnavailable) -> JSONResponse:
        logger.warning("503 for %s: %s", request.url.path, exc)
        return JSONResponse(status_code=503, content={"detail": f"candidate store unavailable: {exc}"}, headers={"Retry-After": "1"})

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # logged with its traceback for the operator; the caller gets a message only
        logger.exception("unexpected error for %s", request.url.path)
        return JSONResponse(status_code=500, content={"detail": f"internal error: {type(exc).__name__}"})

    @app.get(
        "/users/{user_id}/candidates",
        response_model=CandidatesOut,
        responses={422: {"model": ErrorOut, "description": "invalid user_id or n"}, 503: {"model": ErrorOut, "description": "Redis unreachable"}},
        summary="Candidates for one user from the topic queues",
    )
    async def get_candidates(
        user_id: Annotated[int, Path(ge=0, description="the user, an integer >= 0")],
        n: Annotated[int | None, Query(ge=1, le=max_n, description=f"how many candidates, 1..{max_n}; default N3={settings.serving.n_candidates}")] = None,
    ) -> Response:
        # The body is serialised by result_json rather than validated through CandidatesOut (which documents it):
        # pydantic validation of 600 nested objects costs more than the whole Redis read.
        async_generator = fast.get("generator")
        if async_generator is not None:
            body = await async_generator.candidates_json(user_id, n)
        else:
            body = result_json(await run_in_threadpool(generator.candidates, user_id, n))
        return Response(content=body, media_type="application/json")

    @app.get("/healthz", responses={503: {"model": ErrorOut}}, summary="Liveness and Redis reachability")
    def health() -> dict:
        try:
            generator.client.ping()
        except Exception as exc:  # any failure to reach Redis means not ready
            raise CandidateStoreUnavailable(f"{type(exc).__name__}: {exc}") from exc
        return {"status": "ok"}

    return app
