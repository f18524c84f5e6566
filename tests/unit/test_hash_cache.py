"""The hash cache's versions: a put read before a drop never lands after it (in-process)."""

from __future__ import annotations

from ratecard.adapters.cache import InProcessCache


def test_a_put_from_before_a_drop_is_refused_and_a_fresh_one_lands() -> None:
    cache = InProcessCache()
    seen = cache.version("k")
    assert cache.put("k", {"f": "1"}, ttl_seconds=60, if_version=seen)
    assert cache.get("k", "f") == "1"
    before = cache.version("k")
    cache.drop("k")
    assert cache.get("k", "f") is None
    assert not cache.put("k", {"f": "stale"}, ttl_seconds=60, if_version=before)
    assert cache.get("k", "f") is None
    assert cache.put("k", {"f": "2"}, ttl_seconds=60, if_version=cache.version("k"))
    assert cache.get("k", "f") == "2"
    assert cache.put("k", {"f": "3"}, ttl_seconds=60)  # unconditional
    assert cache.version("other") != cache.version("k")


def test_versions_forgotten_when_full_still_refuse_every_older_reading() -> None:
    cache = InProcessCache(max_keys=3)
    readings = {key: cache.version(key) for key in ("a", "b", "c", "d")}
    for key in ("a", "b", "c"):
        cache.drop(key)
    cache.drop("d")  # the table is full: emptied, the floor raised past every version given
    for key, seen in readings.items():
        assert not cache.put(key, {"f": "stale"}, ttl_seconds=60, if_version=seen), key
    assert cache.put("a", {"f": "new"}, ttl_seconds=60, if_version=cache.version("a"))
    assert cache.get("a", "f") == "new"
