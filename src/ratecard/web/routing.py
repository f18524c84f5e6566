"""The API's router: a plain (``def``) endpoint runs in a worker thread, and its answer is
checked and serialized back on the event loop.

    >>> router = Router(tags=["customers"])                                  # doctest: +SKIP
    >>> @router.get("/v1/customers/{customer_id}")
    ... def get_customer(customer_id: str, ctx: Reader) -> Customer: ...

FastAPI runs a plain endpoint in a worker thread, then validates and serializes its return value
against the response model in a worker thread again (`fastapi.routing.serialize_response`): two
hops per request, each a wake-up of the event loop and of a thread. `Router` hands FastAPI a
coroutine instead (`threaded`), which runs the endpoint in a worker thread once; FastAPI then
treats the endpoint as async and does the rest on the loop, as it does for a coroutine. The
endpoint's signature, annotations and response model are its own (`functools.wraps`), and the
decorated function is returned unchanged.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

import anyio.to_thread
from fastapi import APIRouter

P = ParamSpec("P")
T = TypeVar("T")


def threaded(endpoint: Callable[P, T]) -> Callable[P, Awaitable[T]]:
    """`endpoint` as a coroutine function that runs it in a worker thread."""

    @functools.wraps(endpoint)
    async def run(*args: P.args, **kwargs: P.kwargs) -> T:
        return await anyio.to_thread.run_sync(functools.partial(endpoint, *args, **kwargs))

    return run


class Router(APIRouter):
    """`APIRouter` whose plain endpoints take one worker thread a request (`threaded`)."""

    def add_api_route(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        if not inspect.iscoroutinefunction(endpoint):
            endpoint = threaded(endpoint)
        super().add_api_route(path, endpoint, **kwargs)
