"""Idempotency keys: NEW, REPLAY, MISMATCH, IN_PROGRESS — race-free on both engines."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import sqlalchemy as sa

from ratecard.adapters.db.models import IdempotencyKeyRow
from ratecard.adapters.db.scope import Mode, TenantScope
from ratecard.core.errors import Conflict, ErrorCode, RatecardError
from ratecard.services.idempotency import IdempotencyService, Outcome, fingerprint

from .factories import tenant_scope

BODY = fingerprint("POST", "/v1/customers", b'{"external_id":"c1"}')
OTHER_BODY = fingerprint("POST", "/v1/customers", b'{"external_id":"c2"}')


@pytest.fixture
def idem(sessions, clock):
    return IdempotencyService(sessions, clock)


@pytest.fixture
def scope(sessions, clock):
    return tenant_scope(sessions, clock)


def test_first_use_is_new_then_replays_the_stored_response(idem, scope):
    assert idem.begin(scope, "k1", BODY, method="POST", path="/v1/customers").outcome is Outcome.NEW
    idem.complete(scope, "k1", status=201, body={"id": "cus_1", "amount": "10.00"})
    replay = idem.begin(scope, "k1", BODY)
    assert (replay.outcome, replay.response_status, replay.response_body) == (
        Outcome.REPLAY,
        201,
        {"id": "cus_1", "amount": "10.00"},
    )
    replay.raise_for_conflict()  # nothing to raise


def test_same_key_other_body_is_a_mismatch(idem, scope):
    idem.begin(scope, "k1", BODY)
    idem.complete(scope, "k1", status=201, body={})
    begun = idem.begin(scope, "k1", OTHER_BODY)
    assert begun.outcome is Outcome.MISMATCH
    with pytest.raises(RatecardError) as caught:
        begun.raise_for_conflict()
    assert caught.value.code is ErrorCode.IDEMPOTENCY_KEY_REUSED


def test_concurrent_use_is_in_progress(idem, scope):
    idem.begin(scope, "k1", BODY)
    begun = idem.begin(scope, "k1", BODY)
    assert begun.outcome is Outcome.IN_PROGRESS
    with pytest.raises(Conflict) as caught:
        begun.raise_for_conflict()
    assert caught.value.code is ErrorCode.IDEMPOTENCY_KEY_IN_USE


def test_abandoned_key_can_be_retried(idem, scope):
    idem.begin(scope, "k1", BODY)
    idem.abandon(scope, "k1")
    assert idem.begin(scope, "k1", BODY).outcome is Outcome.NEW


def test_keys_are_per_tenant_and_mode(idem, scope, sessions, clock):
    other = tenant_scope(sessions, clock, "Other")
    test_mode = TenantScope(scope.tenant_id, Mode.TEST)
    assert idem.begin(scope, "k1", BODY).outcome is Outcome.NEW
    assert idem.begin(other, "k1", OTHER_BODY).outcome is Outcome.NEW
    assert idem.begin(test_mode, "k1", OTHER_BODY).outcome is Outcome.NEW


def test_expired_key_starts_afresh(idem, scope, clock):
    idem.begin(scope, "k1", BODY)
    idem.complete(scope, "k1", status=200, body={"v": 1})
    clock.advance(timedelta(hours=24))
    assert idem.begin(scope, "k1", OTHER_BODY).outcome is Outcome.NEW
    idem.complete(scope, "k1", status=200, body={"v": 2})
    assert idem.begin(scope, "k1", OTHER_BODY).response_body == {"v": 2}


def test_purge_removes_expired_keys(idem, scope, clock):
    idem.begin(scope, "old", BODY)
    clock.advance(timedelta(hours=25))
    idem.begin(scope, "new", BODY)
    assert idem.purge_expired() >= 1
    assert idem.begin(scope, "new", BODY).outcome is Outcome.IN_PROGRESS


def test_fifty_concurrent_begins_with_one_key_give_exactly_one_new(idem, scope, sessions):
    threads = 50
    barrier = threading.Barrier(threads)

    def attempt(_: int) -> Outcome:
        barrier.wait()
        return idem.begin(scope, "race", BODY).outcome

    with ThreadPoolExecutor(max_workers=threads) as pool:
        outcomes = list(pool.map(attempt, range(threads)))
    assert outcomes.count(Outcome.NEW) == 1
    assert outcomes.count(Outcome.IN_PROGRESS) == threads - 1
    with sessions() as session:
        rows = session.scalar(
            sa.select(sa.func.count())
            .select_from(IdempotencyKeyRow)
            .where(IdempotencyKeyRow.tenant_id == scope.tenant_id, IdempotencyKeyRow.key == "race")
        )
    assert rows == 1


def test_fingerprint_separates_method_path_and_body():
    assert fingerprint("POST", "/a", b"x") != fingerprint("PUT", "/a", b"x")
    assert fingerprint("POST", "/a", b"bc") != fingerprint("POST", "/ab", b"c")
    assert fingerprint("post", "/a", b"x") == fingerprint("POST", "/a", b"x")
