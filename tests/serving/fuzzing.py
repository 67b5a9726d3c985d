"""One schemathesis loop for the fuzz tests: every operation of an app's OpenAPI schema, with
valid (positive) and schema-violating (negative) requests, each case handed to `check`."""

import pytest


def fuzz_every_operation(app, check, examples: int) -> None:
    """Run `check(case)` on `examples` derandomized cases per operation and generation mode.
    An operation without input (GET /health, /stats) has no negative cases: that is allowed."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            run = given(case=operation.as_strategy(generation_mode=mode))(check)
            run = settings(
                max_examples=examples,
                deadline=None,
                derandomize=True,
                database=None,
                suppress_health_check=list(HealthCheck),
            )(run)
            try:
                run()
            except Unsatisfiable:
                assert mode == GenerationMode.NEGATIVE and operation.method.upper() == "GET"
