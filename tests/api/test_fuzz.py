"""API fuzzing with schemathesis against the OpenAPI schema the app publishes: the real app served over loopback
HTTP, the real model (with few new tokens), the demo database. Every operation gets valid and invalid inputs;
no answer may be a 500, and every answer must match what the schema declares (status, content type, body).
"""

from collections import Counter

import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from tests_support import MODEL_DIR, start_in_thread

from app.core.config import Settings
from app.main import create_app

pytestmark = pytest.mark.slow

CHECKS = [
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
]
# Invalid input must be refused with one of these (413: the body-size limit; 400: a body that is not UTF-8).
CONFIG = schemathesis.Config.from_dict(
    {"checks": {"negative_data_rejection": {"expected-statuses": ["400", "413", "422"]}}}
)
EXAMPLES = 30  # per operation and mode
MODEL_EXAMPLES = 8  # /query decodes with the model: a few valid questions are enough to cover its answers


@pytest.fixture(scope="module")
def fuzz_server(demo_db, generator, tmp_path_factory):
    settings = Settings(
        database_url=f"sqlite:///{demo_db}",
        querylog_url=f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'querylog.sqlite'}",
        model_dir=MODEL_DIR,
        auth_disabled=True,
        rate_limit_per_minute=100_000,
        rate_limit_burst=10_000,
        max_in_flight_per_key=1000,
        max_new_tokens=16,
    )
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings, generator), host="127.0.0.1", port=0, log_level="warning")
    )
    thread = start_in_thread(server)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(30)


def _fuzz(op, mode, examples: int, base_url: str, seen: Counter, failures: list[str]) -> None:
    checks = CHECKS + ([negative_data_rejection] if mode is schemathesis.GenerationMode.NEGATIVE else [])

    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=op.as_strategy(generation_mode=mode))
    def run(case):
        response = case.call(base_url=base_url, timeout=120)
        seen[(op.label, mode.value, response.status_code)] += 1
        try:
            case.validate_response(response, checks=checks)
        except BaseException as exc:  # collect every operation's failures (groups too), then report them together
            failures.append(f"{op.label} [{mode.value}] -> {response.status_code}: {str(exc)[:800]}")

    run()


def test_every_operation_survives_fuzzing_and_keeps_its_schema(fuzz_server):
    schema = schemathesis.openapi.from_url(f"{fuzz_server}/openapi.json", config=CONFIG)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {"/query", "/sql", "/readyz"} <= {op.path for op in operations}
    seen: Counter = Counter()
    failures: list[str] = []
    for op in operations:
        has_input = any(len(p) for p in (op.body, op.query, op.path_parameters, op.headers))
        modes = [schemathesis.GenerationMode.POSITIVE] + ([schemathesis.GenerationMode.NEGATIVE] if has_input else [])
        for mode in modes:
            model = op.path == "/query" and mode is schemathesis.GenerationMode.POSITIVE
            _fuzz(op, mode, MODEL_EXAMPLES if model else EXAMPLES, fuzz_server, seen, failures)

    summary = "\n".join(f"{label} {mode}: {code} x{n}" for (label, mode, code), n in sorted(seen.items()))
    print(f"{sum(seen.values())} fuzz cases\n{summary}")
    assert not failures, "\n\n".join(failures[:10])
    assert not any(code >= 500 and code != 503 for (_, _, code) in seen), summary
