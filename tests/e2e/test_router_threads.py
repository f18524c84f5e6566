"""`web.routing.Router`: a plain endpoint takes one worker thread a request, and is otherwise
the endpoint FastAPI would have made of it (parameters, response model, validation)."""

from __future__ import annotations

import threading
from typing import Annotated

import anyio.to_thread
import pytest
from fastapi import Depends, FastAPI
from fastapi.exceptions import ResponseValidationError
from fastapi.testclient import TestClient
from pydantic import BaseModel

from ratecard.web.routing import Router


class Item(BaseModel):
    id: int
    q: str | None


_THREADS: dict[str, int] = {}


async def on_the_loop() -> None:
    _THREADS["loop"] = threading.get_ident()


def _app(monkeypatch: pytest.MonkeyPatch) -> tuple[FastAPI, list[str], dict[str, int]]:
    hops: list[str] = []
    real = anyio.to_thread.run_sync

    async def counted(function, *args, **kwargs):  # type: ignore[no-untyped-def]
        hops.append(getattr(function, "func", function).__name__)
        return await real(function, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counted)
    threads = _THREADS
    threads.clear()
    router = Router()

    @router.get("/items/{item_id}")
    def get_item(
        item_id: int, _loop: Annotated[None, Depends(on_the_loop)], q: str | None = None
    ) -> Item:
        threads["endpoint"] = threading.get_ident()
        return Item(id=item_id, q=q)

    @router.get("/broken")
    def broken() -> Item:
        return {"id": "not a number", "q": None}  # type: ignore[return-value]

    @router.get("/async")
    async def already_async() -> Item:
        return Item(id=1, q=None)

    assert get_item(2, None).id == 2, "the decorated function is the endpoint itself"
    app = FastAPI()
    app.include_router(router)
    return app, hops, threads


def test_a_plain_endpoint_runs_once_in_a_worker_thread_and_answers_as_declared(monkeypatch):
    app, hops, threads = _app(monkeypatch)
    with TestClient(app) as client:
        response = client.get("/items/3", params={"q": "x"})
        assert response.status_code == 200
        assert response.json() == {"id": 3, "q": "x"}
        assert hops == ["get_item"], "one hop: the answer is checked on the event loop"
        assert threads["endpoint"] != threads["loop"]
        invalid = client.get("/items/three")
        assert invalid.status_code == 422
        assert invalid.json()["detail"][0]["loc"] == ["path", "item_id"]
        hops.clear()
        assert client.get("/async").json() == {"id": 1, "q": None}
        assert hops == [], "a coroutine endpoint stays on the loop"
        with pytest.raises(ResponseValidationError):
            client.get("/broken")
    schema = app.openapi()["paths"]["/items/{item_id}"]["get"]
    assert [p["name"] for p in schema["parameters"]] == ["item_id", "q"]
    ok = schema["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/Item"}
