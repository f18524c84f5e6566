"""A small hash cache for O(1) lookups: in-process by default, Redis when configured.

    >>> cache = InProcessCache()
    >>> cache.put("ent:ten_1:live:cus_1", {"sso": "{...}"}, ttl_seconds=300)
    >>> cache.get("ent:ten_1:live:cus_1", "sso")
    '{...}'
    >>> cache.drop("ent:ten_1:live:cus_1")
    >>> cache.get("ent:ten_1:live:cus_1", "sso") is None
    True

One key holds one hash (all the entitlements of a customer); `drop` forgets the whole hash, so an
invalidation is one operation however many features there are. Redis errors surface as
`CacheUnavailable`, which callers treat as a miss.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any, Protocol


class CacheUnavailable(Exception):
    """The cache could not be reached."""


class HashCache(Protocol):
    def get(self, key: str, field: str) -> str | None: ...

    def put(self, key: str, values: Mapping[str, str], *, ttl_seconds: int) -> None: ...

    def drop(self, key: str) -> None: ...


class InProcessCache:
    """A dict of hashes with expiry; thread-safe. Bounded: the oldest keys go first."""

    def __init__(self, max_keys: int = 100_000) -> None:
        self._data: dict[str, tuple[int, dict[str, str]]] = {}
        self._lock = threading.Lock()
        self._max_keys = max_keys

    def get(self, key: str, field: str) -> str | None:
        with self._lock:
            entry = self._data.get(key)
            if entry is None:
                return None
            if entry[0] < time.monotonic_ns():
                del self._data[key]
                return None
            return entry[1].get(field)

    def put(self, key: str, values: Mapping[str, str], *, ttl_seconds: int) -> None:
        expires = time.monotonic_ns() + ttl_seconds * 1_000_000_000
        with self._lock:
            if len(self._data) >= self._max_keys and key not in self._data:
                del self._data[next(iter(self._data))]
            self._data[key] = (expires, dict(values))

    def drop(self, key: str) -> None:
        with self._lock:
            self._data.pop(key, None)


class RedisCache:
    """Hashes in Redis: ``HGET`` to read, ``HSET`` + ``EXPIRE`` to fill, ``DEL`` to invalidate."""

    def __init__(self, url: str, *, timeout_seconds: int = 1) -> None:
        import redis

        self._redis: Any = redis.Redis.from_url(
            url,
            socket_timeout=timeout_seconds,
            socket_connect_timeout=timeout_seconds,
            decode_responses=True,
        )
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)

    def get(self, key: str, field: str) -> str | None:
        try:
            value = self._redis.hget(key, field)
        except self._errors as exc:
            raise CacheUnavailable(str(exc)) from exc
        return None if value is None else str(value)

    def put(self, key: str, values: Mapping[str, str], *, ttl_seconds: int) -> None:
        try:
            with self._redis.pipeline() as pipe:
                pipe.delete(key)
                pipe.hset(key, mapping=dict(values))
                pipe.expire(key, ttl_seconds)
                pipe.execute()
        except self._errors as exc:
            raise CacheUnavailable(str(exc)) from exc

    def drop(self, key: str) -> None:
        try:
            self._redis.delete(key)
        except self._errors as exc:
            raise CacheUnavailable(str(exc)) from exc
