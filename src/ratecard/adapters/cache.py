"""A small hash cache for O(1) lookups: in-process by default, Redis when configured.

    >>> cache = InProcessCache()
    >>> cache.put("ent:ten_1:live:cus_1", {"sso": "{...}"}, ttl_seconds=300)
    True
    >>> cache.get("ent:ten_1:live:cus_1", "sso")
    '{...}'
    >>> cache.drop("ent:ten_1:live:cus_1")
    >>> cache.get("ent:ten_1:live:cus_1", "sso") is None
    True

One key holds one hash (all the entitlements of a customer); `drop` forgets the whole hash, so an
invalidation is one operation however many features there are. Redis errors surface as
`CacheUnavailable`, which callers treat as a miss.

Every `drop` also raises the key's version. A caller that computes what to cache reads the
version first and puts with ``if_version=``: a drop that landed while it computed (the usage or
the plan changed under it) makes the put a no-op, so a stale answer is never cached after its
invalidation::

    >>> seen = cache.version("k")
    >>> cache.drop("k")                                       # an invalidation meanwhile
    >>> cache.put("k", {"f": "old"}, ttl_seconds=300, if_version=seen)
    False
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

    def version(self, key: str) -> int: ...

    def put(
        self,
        key: str,
        values: Mapping[str, str],
        *,
        ttl_seconds: int,
        if_version: int | None = None,
    ) -> bool: ...

    def drop(self, key: str) -> None: ...


class InProcessCache:
    """A dict of hashes with expiry; thread-safe. Bounded: the oldest keys go first."""

    def __init__(self, max_keys: int = 100_000) -> None:
        self._data: dict[str, tuple[int, dict[str, str]]] = {}
        self._lock = threading.Lock()
        self._max_keys = max_keys
        # The version of each key dropped; a key without one has `_floor`. When the table is
        # full it is emptied and the floor passes every version given: an older reading then
        # differs from the key's version, and its put is refused (never a stale one accepted).
        self._versions: dict[str, int] = {}
        self._floor = 0
        self._next = 1

    def get(self, key: str, field: str) -> str | None:
        with self._lock:
            entry = self._data.get(key)
            if entry is None:
                return None
            if entry[0] < time.monotonic_ns():
                del self._data[key]
                return None
            return entry[1].get(field)

    def version(self, key: str) -> int:
        with self._lock:
            return self._versions.get(key, self._floor)

    def put(
        self,
        key: str,
        values: Mapping[str, str],
        *,
        ttl_seconds: int,
        if_version: int | None = None,
    ) -> bool:
        expires = time.monotonic_ns() + ttl_seconds * 1_000_000_000
        with self._lock:
            if if_version is not None and self._versions.get(key, self._floor) != if_version:
                return False
            if len(self._data) >= self._max_keys and key not in self._data:
                del self._data[next(iter(self._data))]
            self._data[key] = (expires, dict(values))
            return True

    def drop(self, key: str) -> None:
        with self._lock:
            self._data.pop(key, None)
            if len(self._versions) >= self._max_keys:
                self._versions.clear()
                self._floor = self._next
                self._next += 1
            self._versions[key] = self._next
            self._next += 1


#: A put that holds only if the key's version (``KEYS[2]``, absent: 0) is ``ARGV[1]``.
_PUT_IF_VERSION = """
if ARGV[1] ~= '' and (redis.call('GET', KEYS[2]) or '0') ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""
#: How long Redis keeps a key's version after its last drop (longer than any computation).
_VERSION_TTL = 24 * 3600


class RedisCache:
    """Hashes in Redis: ``HGET`` to read, ``HSET`` + ``EXPIRE`` to fill (one script, checking
    the key's version), ``DEL`` + ``INCR`` of ``<key>:v`` to invalidate."""

    def __init__(self, url: str, *, timeout_seconds: int = 1) -> None:
        import redis

        self._redis: Any = redis.Redis.from_url(
            url,
            socket_timeout=timeout_seconds,
            socket_connect_timeout=timeout_seconds,
            decode_responses=True,
        )
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self._put_if_version = self._redis.register_script(_PUT_IF_VERSION)

    def get(self, key: str, field: str) -> str | None:
        try:
            value = self._redis.hget(key, field)
        except self._errors as exc:
            raise CacheUnavailable(str(exc)) from exc
        return None if value is None else str(value)

    def version(self, key: str) -> int:
        try:
            value = self._redis.get(f"{key}:v")
        except self._errors as exc:
            raise CacheUnavailable(str(exc)) from exc
        return 0 if value is None else int(value)

    def put(
        self,
        key: str,
        values: Mapping[str, str],
        *,
        ttl_seconds: int,
        if_version: int | None = None,
    ) -> bool:
        if not values:
            raise ValueError("a hash holds at least one field")
        fields = [item for pair in values.items() for item in pair]
        expected = "" if if_version is None else str(if_version)
        try:
            done = self._put_if_version(
                keys=[key, f"{key}:v"], args=[expected, ttl_seconds, *fields]
            )
        except self._errors as exc:
            raise CacheUnavailable(str(exc)) from exc
        return bool(done)

    def drop(self, key: str) -> None:
        try:
            with self._redis.pipeline() as pipe:
                pipe.delete(key)
                pipe.incr(f"{key}:v")
                pipe.expire(f"{key}:v", _VERSION_TTL)
                pipe.execute()
        except self._errors as exc:
            raise CacheUnavailable(str(exc)) from exc
