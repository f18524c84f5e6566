"""Schemathesis over /openapi.json against the app: no 5xx, every response as documented.

Each operation gets a few generated requests (valid and invalid) with a real tenant's admin
key; the checks are: no server error, documented status code, documented content type and a
body that matches the documented schema.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.e2e.conftest import PRO, Api, customer_body

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
EXAMPLES = 6


def test_api_conforms_to_its_schema(api: Api) -> None:
    tenant = api.tenant()
    api.post("/v1/plans", tenant, PRO)
    api.post("/v1/customers", tenant, customer_body())
    schema = schemathesis.openapi.from_asgi("/openapi.json", api.app)
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any) -> None:
            case.call_and_validate(headers=dict(tenant.admin), checks=CHECKS)

        try:
            run()
        except Exception as error:  # collect every operation's failure, then report them all
            failures.append(f"{operation.label}: {error}")
    assert operations >= 40
    served = api.client.get("/metrics").text.count("ratecard_http_requests_total{")
    assert served >= operations, "the generated requests reached the app"
    assert not failures, "\n\n".join(failures)
