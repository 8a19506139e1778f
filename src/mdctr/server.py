"""HTTP scoring with FastAPI: ``POST /predict``, ``GET /health``, ``GET /metadata``.

The request schema is generated from the run's columns, so a missing feature, a wrong type,
an empty or oversized candidate list is a 422 naming the field, never a 500.

    POST /predict {"candidates": [{"user_id": "1", "item_id": "1193", "gender": "F", ...}, ...]}
    -> {"scores": [0.41, ...], "domain_seen": [true, ...]}
"""

import asyncio
import gc
import json
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr, create_model
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from typing_extensions import TypedDict

from mdctr.data.encode import Encoder
from mdctr.errors import InputError
from mdctr.predictor import Predictor

MAX_CANDIDATES = 1000
BYTES_PER_CANDIDATE = 8192
BODY_TIMEOUT_S = 10.0  # a request body not received by then gets 408: slow clients cannot hold a worker
HEADER_TIMEOUT_S = 10.0  # a connection whose request headers have not arrived by then is closed

Scalar = StrictStr | StrictInt
Number = StrictFloat | StrictInt


def request_model(encoder: Encoder, max_candidates: int) -> type[BaseModel]:
    """``{"candidates": [row, ...]}`` with one required key per feature and domain column.

    Categorical and domain values: string or integer (null = missing -> OOV); numeric: number
    or null (-> the training mean); sequence: a list of values or one text joined by the
    feature's separator. Other keys in a row are ignored.
    """
    kinds = {f.name: f.kind for f in encoder.schema.features}
    types: dict[str, Any] = {
        "categorical": Scalar | None,
        "numeric": Number | None,
        "sequence": list[Scalar] | StrictStr | None,
    }
    fields = {name: types[kind] for name, kind in kinds.items()}
    fields.update({column: Scalar | None for column in encoder.schema.domain if column not in fields})
    candidate = TypedDict("Candidate", fields)  # type: ignore[misc]  # keys are column names, any text
    candidate.__pydantic_config__ = ConfigDict(extra="ignore")  # type: ignore[attr-defined]
    return create_model(
        "PredictRequest",
        __config__=ConfigDict(extra="forbid"),
        candidates=(Annotated[list[candidate], Field(min_length=1, max_length=max_candidates)], ...),
    )


class BodyTimeout:
    """ASGI middleware: a request whose body has not arrived within ``seconds`` of the request's
    start is answered 408 (a client trickling its body cannot hold the request open)."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app, self.seconds = app, seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = asyncio.get_running_loop().time() + self.seconds

        async def timed() -> Message:
            try:
                async with asyncio.timeout_at(deadline):
                    return await receive()
            except TimeoutError:
                raise HTTPException(408, f"request body not received within {self.seconds:g} s") from None

        await self.app(scope, timed, send)


class PredictResponse(BaseModel):
    scores: list[float]
    domain_seen: list[bool]


def create_app(
    predictor: Predictor, max_candidates: int = MAX_CANDIDATES, body_timeout_s: float = BODY_TIMEOUT_S
) -> FastAPI:
    """The scoring API over one loaded Predictor."""
    metadata = {**predictor.metadata(), "max_candidates": max_candidates}
    app = FastAPI(
        title=f"mdctr: {predictor.run.experiment.name}",
        version=metadata["version"],
        max_body_size=max_candidates * BYTES_PER_CANDIDATE,  # 413 before the body is parsed
    )
    app.add_middleware(BodyTimeout, seconds=body_timeout_s)
    request = request_model(predictor.encoder, max_candidates)
    unseen = len(predictor.domains)

    @app.exception_handler(RequestValidationError)
    async def invalid(_req: Request, err: RequestValidationError) -> JSONResponse:
        shown = [{k: e[k] for k in ("loc", "msg", "type") if k in e} for e in err.errors()[:20]]
        return JSONResponse({"detail": shown}, status_code=422)

    @app.exception_handler(InputError)
    async def input_error(_req: Request, err: InputError) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, status_code=422)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/metadata")
    async def get_metadata() -> dict:
        return metadata

    @app.post("/predict", response_model=PredictResponse)
    async def predict(body: request) -> Response:  # type: ignore[valid-type]
        encoded = predictor.encoder.transform_records(body.candidates, typed=True)
        scores = predictor.score(encoded)
        # serialised here: FastAPI's response-model pass costs more than the scoring
        result = {"scores": scores.tolist(), "domain_seen": (encoded.domain < unseen).tolist()}
        return Response(json.dumps(result), media_type="application/json")

    return app


def header_deadline(seconds: float) -> type:
    """uvicorn's httptools protocol, closing a connection whose request headers have not all
    arrived ``seconds`` after it opened or after its previous response: a client that connects
    and stays silent, or sends its headers a byte at a time, cannot hold connections for ever."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class HeaderDeadline(HttpToolsProtocol):
        _deadline: asyncio.TimerHandle | None = None

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(seconds, self._expire)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expire(self) -> None:
            if not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and not self.pipeline:  # a pipelined request has its headers
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return HeaderDeadline


def serve(
    predictor: Predictor,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_candidates: int = MAX_CANDIDATES,
    header_timeout_s: float = HEADER_TIMEOUT_S,
) -> None:
    """Run the API with uvicorn until interrupted."""
    import uvicorn

    app = create_app(predictor, max_candidates)
    gc.collect()
    gc.freeze()  # the ~10^6 objects of torch/polars imports: a full GC would otherwise stall requests
    protocol = header_deadline(header_timeout_s)
    uvicorn.run(app, host=host, port=port, log_level="warning", http=protocol)
