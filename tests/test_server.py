"""The HTTP API: scores in order, 422 (never 500) for bad input, unseen values scored,
metadata, and a restarted server that gives the same scores."""

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from mdctr.predictor import Predictor
from mdctr.server import create_app

from .conftest import click_table


@pytest.fixture(scope="module")
def client(mlora_run: Path) -> TestClient:
    return TestClient(create_app(Predictor(mlora_run), max_candidates=64), raise_server_exceptions=False)


def rows(n: int = 20) -> list[dict]:
    return click_table(rows=n, seed=9).drop("click").to_dicts()


def test_predict_scores_in_order(client: TestClient, mlora_run: Path) -> None:
    candidates = rows()
    response = client.post("/predict", json={"candidates": candidates})
    assert response.status_code == 200
    body = response.json()
    expected = Predictor(mlora_run, backend="torch").predict_records(candidates)
    np.testing.assert_allclose(body["scores"], expected, atol=1e-5, rtol=0)
    assert body["domain_seen"] == [True] * 20
    reversed_ = client.post("/predict", json={"candidates": candidates[::-1]}).json()
    np.testing.assert_allclose(reversed_["scores"], body["scores"][::-1], atol=1e-7)


def test_extra_keys_in_a_row_are_ignored(client: TestClient) -> None:
    candidate = dict(rows(1)[0], click=1, request_id="abc")
    assert client.post("/predict", json={"candidates": [candidate]}).status_code == 200


def errors_of(response: httpx.Response) -> list[tuple]:
    assert response.status_code == 422, response.text
    return [(tuple(e["loc"]), e["type"]) for e in response.json()["detail"]]


def test_invalid_input_is_422_naming_the_field(client: TestClient) -> None:
    good = rows(3)
    missing = [good[0], {k: v for k, v in good[1].items() if k != "price"}]
    assert errors_of(client.post("/predict", json={"candidates": missing})) == [
        (("body", "candidates", 1, "price"), "missing")
    ]
    wrong = [dict(good[0], price="cheap")]
    assert {loc for loc, _ in errors_of(client.post("/predict", json={"candidates": wrong}))} == {
        ("body", "candidates", 0, "price", "float"),
        ("body", "candidates", 0, "price", "int"),
    }
    nested = [dict(good[0], item={"id": 3})]
    assert all(
        loc[:4] == ("body", "candidates", 0, "item")
        for loc, _ in errors_of(client.post("/predict", json={"candidates": nested}))
    )
    assert errors_of(client.post("/predict", json={"candidates": []})) == [
        (("body", "candidates"), "too_short")
    ]
    assert errors_of(client.post("/predict", json={"candidates": good * 30})) == [
        (("body", "candidates"), "too_long")
    ]
    assert errors_of(client.post("/predict", json=good))[0][0] == ("body",)
    assert (
        client.post(
            "/predict", content=b"{not json", headers={"content-type": "application/json"}
        ).status_code
        == 422
    )


def test_oversized_body_is_refused_before_parsing(client: TestClient) -> None:
    response = client.post(
        "/predict", content=b" " * (64 * 8192 + 1), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413


def test_unseen_categories_and_domain_are_scored(client: TestClient) -> None:
    candidate = dict(
        rows(1)[0], scene="new-scene", item="never-seen", tags=["nope"], price=None, category=None
    )
    body = client.post("/predict", json={"candidates": [candidate]}).json()
    assert body["domain_seen"] == [False] and 0 < body["scores"][0] < 1


def test_health_and_metadata(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    meta = client.get("/metadata").json()
    assert meta["domains"] == ["d0", "d1", "d2"] and meta["max_candidates"] == 64
    assert [f["name"] for f in meta["features"]] == ["user", "item", "category", "price", "tags"]
    assert meta["model"] == {"backbone": "dnn", "multidomain": "mlora"} and "wauc" in meta["metrics"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scores_from_a_fresh_server(run: Path, candidates: list[dict]) -> list[float]:
    port = free_port()
    cmd = [sys.executable, "-c", "from mdctr.cli import main; main()", "serve", str(run), "--port", str(port)]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, server.stderr.read().decode()
            assert time.monotonic() < deadline, "server did not start within 60 s"
            time.sleep(0.2)
        response = httpx.post(f"http://127.0.0.1:{port}/predict", json={"candidates": candidates}, timeout=10)
        assert response.status_code == 200, response.text
        return json.loads(response.text)["scores"]
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_restarted_server_gives_the_same_scores(mlora_run: Path) -> None:
    candidates = rows(50)
    assert scores_from_a_fresh_server(mlora_run, candidates) == scores_from_a_fresh_server(
        mlora_run, candidates
    )


DEEP = b'{"candidates": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
ABUSE = {
    "not JSON": (b"{not json", "application/json"),
    "invalid UTF-8": (b'{"candidates": [{"user": "\xff\xfe"}]}', "application/json"),
    "empty body": (b"", "application/json"),
    "a JSON array": (b"[1, 2, 3]", "application/json"),
    "a JSON string": (b'"candidates"', "application/json"),
    "null candidates": (b'{"candidates": null}', "application/json"),
    "nested 100k deep": (DEEP, "application/json"),
    "text/plain": (b'{"candidates": []}', "text/plain"),
    "a bool for a number": (None, "price=true"),
    "a dict inside a sequence": (None, 'tags=[{"a": 1}]'),
}


def with_raw_field(field: str, value: str) -> bytes:
    """A request of one good row whose ``field`` holds ``value`` as raw JSON text."""
    row = json.dumps({k: v for k, v in rows(1)[0].items() if k != field})
    return f'{{"candidates": [{row[:-1]}, "{field}": {value}}}]}}'.encode()


@pytest.mark.parametrize("name", sorted(ABUSE))
def test_abusive_requests_are_refused_with_a_4xx_never_a_500(client: TestClient, name: str) -> None:
    body, kind = ABUSE[name]
    if body is None:  # one field of a good row replaced by raw JSON
        body, kind = with_raw_field(*kind.split("=", 1)), "application/json"
    response = client.post("/predict", content=body, headers={"content-type": kind})
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    assert "detail" in response.json()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("price", "NaN"),
        ("price", "Infinity"),
        ("price", "1" * 400),
        ("item", "1" * 400),
        ("item", f'"{"x" * 400_000}"'),
    ],
)
def test_non_finite_numbers_and_huge_values_are_scored_as_missing(
    client: TestClient, field: str, value: str
) -> None:
    response = client.post(
        "/predict", content=with_raw_field(field, value), headers={"content-type": "application/json"}
    )
    assert response.status_code == 200, response.text
    assert 0 < json.loads(response.text)["scores"][0] < 1


def test_a_tampered_run_directory_is_refused(mlora_run: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from mdctr.cli import app
    from mdctr.errors import InputError

    for name, change in (("model.safetensors", b"\0"), ("vocab.json", b" "), ("config.yaml", b"\n")):
        copy = tmp_path / name
        copy.mkdir()
        for f in mlora_run.iterdir():
            (copy / f.name).write_bytes(f.read_bytes() + (change if f.name == name else b""))
        with pytest.raises(InputError, match=f"{name} does not match its SHA-256 in checksums.json"):
            Predictor(copy)
        result = CliRunner().invoke(app, ["serve", str(copy), "--port", str(free_port())])
        assert result.exit_code == 2 and result.stderr.startswith(f"error: {copy / name} does not match")


def test_loading_and_serving_never_unpickle(mlora_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pickle

    import torch

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("unpickling was attempted")

    for module, name in ((pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (torch, "load")):
        monkeypatch.setattr(module, name, refuse)
    for backend in ("onnx", "torch"):
        served = TestClient(create_app(Predictor(mlora_run, backend=backend)))
        assert served.post("/predict", json={"candidates": rows(5)}).status_code == 200


def test_a_body_that_does_not_arrive_in_time_gets_408(mlora_run: Path) -> None:
    """A client trickling its body is answered 408 at the deadline instead of holding the request."""
    import asyncio

    app = create_app(Predictor(mlora_run), body_timeout_s=0.2)
    sent: list[dict] = []

    async def receive() -> dict:
        await asyncio.sleep(5)
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "path": "/predict", "raw_path": b"/predict", "query_string": b"", "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"100")],
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8000), "scheme": "http",
    }  # fmt: skip
    started = time.perf_counter()
    asyncio.run(app(scope, receive, send))
    assert time.perf_counter() - started < 2
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 408
    assert b"request body not received within 0.2 s" in sent[1]["body"]


def test_connections_without_complete_headers_are_closed_at_the_deadline() -> None:
    """A silent connection, or one sending its headers a byte at a time, is closed; a normal
    request on the same server is answered."""
    import threading

    import uvicorn

    from mdctr.server import header_deadline

    async def hello(scope: dict, receive: object, send: object) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    port = free_port()
    config = uvicorn.Config(hello, host="127.0.0.1", port=port, http=header_deadline(0.5), log_level="error")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        silent, trickle = (
            socket.create_connection(("127.0.0.1", port)),
            socket.create_connection(("127.0.0.1", port)),
        )
        started = time.monotonic()
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=5).text == "ok"
        with pytest.raises(OSError):  # the server closes it while its header still trickles in
            for byte in b"GET / HTTP/1.1\r\nhost: x\r\n" * 10:
                trickle.send(bytes([byte]))
                time.sleep(0.05)
        silent.settimeout(5)
        assert silent.recv(64) == b""  # closed by the server
        assert time.monotonic() - started < 4
        silent.close()
        trickle.close()
    finally:
        server.should_exit = True
        thread.join(timeout=10)
