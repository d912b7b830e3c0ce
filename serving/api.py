"""HTTP API of candidate generation: ``GET /users/{user_id}/candidates?n=``.

Run it with ``topicfs serve api`` (uvicorn); the OpenAPI spec is served at ``/openapi.json`` and browsable at
``/docs``, Prometheus metrics at ``/metrics``. A request runs :class:`serving.candidates.AsyncCandidateGenerator` on
an asyncio client in the server's event loop: one EVALSHA on a single Redis with one shard, the Python reader's
pipelines (sent to every node at once) on a Redis Cluster. At most ``redis.max_connections`` requests use Redis at
once; a burst beyond that waits its turn instead of failing or opening more connections.

Every answer that is not a 200 is JSON ``{"detail": ...}``:

* 422: an invalid parameter, named. Ids are decimal integers in 0..2^63-1 written without sign, spaces or leading
  zeros (``/users/-0``, ``n=+3`` and a 4,300-digit id are refused, not parsed);
* 404 / 405: an unknown path or method;
* 503 (``Retry-After: 1``): Redis is unreachable or answered with an error;
* 500: a bug (logged with its traceback; the caller sees the exception's type only);
* 400: a request uvicorn cannot parse as HTTP (:func:`json_http_protocol` makes uvicorn's own reply JSON too).
  Not handleable: a connection closed or timed out before a full request arrived gets no reply at all; uvicorn's
  plain-text 500 (an app that raised before answering) and 503 (``limit_concurrency``, not set) never occur here.

Corrupt values in the Redis state are skipped with a warning and counted (``topicfs_candidates_corrupt_values_total``),
never an error. ``/metrics`` also counts requests by status (``topicfs_api_requests_total{status}``).
"""

# no "from __future__ import annotations": FastAPI reads the endpoint annotations, which use local names

import json
import logging
import re
from contextlib import asynccontextmanager
from typing import Annotated, Any, Callable

from fastapi import FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client import Counter as PrometheusCounter
from pydantic import BaseModel, BeforeValidator, Field
from starlette.concurrency import run_in_threadpool

from serving.candidates import (
    CORRUPT_VALUES,
    INT64_MAX,
    AsyncCandidateGenerator,
    CandidateGenerator,
    CandidateStoreUnavailable,
    result_json,
)
from topicfs.settings import Settings, get_settings

logger = logging.getLogger(__name__)

_DECIMAL = re.compile(r"(?:0|[1-9][0-9]*)\Z")


def _canonical_int(value: Any) -> Any:
    """Accept a canonical decimal (what the route gets, a string) of at most 19 digits; pydantic then makes the int
    and checks the bounds. Refuses ``-0``, ``+3``, ``007``, `` 7``, ``1_000`` and 4,300-digit numbers before any
    parsing."""
    if isinstance(value, str):
        if not _DECIMAL.match(value):
            raise ValueError("must be a decimal integer without sign, spaces or leading zeros")
        if len(value) > 19:
            raise ValueError(f"must be at most {INT64_MAX} (2^63-1)")
    return value


CanonicalInt = BeforeValidator(_canonical_int)


class CandidateOut(BaseModel):
    video_id: int = Field(description="candidate video")
    topic_id: int = Field(description="the topic queue it was drawn from")


class TopicOut(BaseModel):
    topic_id: int
    votes: float = Field(description="the user's recent clicks on the topic, or its total clicks for source 'popular'")
    n_candidates: int = Field(description="candidates drawn from this topic's queue")


class CandidatesOut(BaseModel):
    user_id: int
    source: str = Field(
        description="'history': topics voted by the user's last N1 clicks; 'popular': no history, the most clicked topics; 'none': no topic known"
    )
    topics: list[TopicOut] = Field(description="the top N2 topics, most votes first")
    candidates: list[CandidateOut] = Field(description="at most n videos, deduplicated, none the user clicked")


class ErrorOut(BaseModel):
    detail: str


def _shown(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(str(value))} characters)"


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("path", "query"))
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{where or 'request'}: {message} (got {_shown(error.get('input'))})")
    return "invalid request: " + "; ".join(parts)


class _RequestCounter:
    """ASGI middleware counting HTTP responses by status (an exception that escapes the app counts as 500)."""

    def __init__(self, app, counter: PrometheusCounter) -> None:
        self.app = app
        self.counter = counter

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = []

        async def counting_send(message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        except BaseException:
            self.counter.labels("500" if not status else str(status[0])).inc()
            raise
        self.counter.labels(str(status[0]) if status else "500").inc()


def create_app(settings: Settings | None = None, generator: CandidateGenerator | None = None) -> FastAPI:
    """The candidate API for ``settings`` (default: the process's settings).

    ``generator`` (tests): a synchronous generator run in the thread pool instead of the asyncio one.
    ``app.state.registry`` holds the app's Prometheus metrics; ``app.state.requests`` counts requests by status.
    """
    settings = settings or get_settings()
    max_n = settings.serving.max_candidates
    fast: dict[str, AsyncCandidateGenerator] = {}
    registry = CollectorRegistry(auto_describe=True)
    registry.register(CORRUPT_VALUES)
    requests = PrometheusCounter(
        "topicfs_api_requests", "HTTP requests of the candidate API by response status", ["status"], registry=registry
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # the asyncio client belongs to the server's event loop, so it is made (and closed) inside it
        if generator is None:
            fast["generator"] = AsyncCandidateGenerator.from_settings(settings)
            await fast["generator"].connect()
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
            f"N1={settings.stream.recent_clicks} clicked videos vote, the top N2={settings.serving.topics_per_user} "
            "topics share the n candidates by votes; users without history get the popular topics."
        ),
    )
    app.state.registry = registry
    app.state.requests = requests
    app.add_middleware(_RequestCounter, counter=requests)

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
        responses={
            422: {"model": ErrorOut, "description": "invalid user_id or n"},
            503: {"model": ErrorOut, "description": "Redis unreachable"},
        },
        summary="Candidates for one user from the topic queues",
    )
    async def get_candidates(
        user_id: Annotated[
            int, CanonicalInt, Path(ge=0, le=INT64_MAX, description="the user, an integer in 0..2^63-1 (no sign, no leading zeros)")
        ],
        n: Annotated[
            int | None,
            CanonicalInt,
            Query(ge=1, le=max_n, description=f"how many candidates, 1..{max_n}; default N3={settings.serving.n_candidates}"),
        ] = None,
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
    async def health() -> dict:
        async_generator = fast.get("generator")
        if async_generator is not None:
            await async_generator.ping()
        else:
            try:
                await run_in_threadpool(generator.client.ping)
            except Exception as exc:  # any failure to reach Redis means not ready
                raise CandidateStoreUnavailable(f"{type(exc).__name__}: {exc}") from exc
        return {"status": "ok"}

    @app.get("/metrics", summary="Prometheus metrics: requests by status, corrupt state entries skipped", response_class=Response)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


def json_http_protocol(on_bad_request: Callable[[], None] | None = None) -> type:
    """uvicorn's HTTP protocol (httptools when installed, else h11) answering a request it cannot parse as HTTP with
    a JSON 400 (``on_bad_request`` is called for each, e.g. to count it) instead of plain text. Pass it as
    ``uvicorn.Config(..., http=json_http_protocol())``. (uvicorn's other own answer, a plain-text 500 for an app that
    raised before answering, never happens with :func:`create_app`: its exception handler always answers JSON.)"""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    class JsonErrorsProtocol(AutoHTTPProtocol):  # type: ignore[misc,valid-type]
        def send_400_response(self, msg: str) -> None:
            if on_bad_request is not None:
                on_bad_request()
            body = json.dumps({"detail": f"bad request: {msg}"}).encode()
            head = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(
                body
            )
            self.transport.write(head + body)
            self.transport.close()

    return JsonErrorsProtocol
