"""The OpenAPI 3.1 document matches the router, and schemathesis finds nothing against the live gateway."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import hypothesis
import schemathesis
from hypothesis import HealthCheck, Phase
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.openapi import OPERATIONS
from tests.gateway.conftest import GATEWAY_MADS
from tests.support.ecosystem import Running, ecosystem_settings, running

NOT_IN_THE_DOCUMENT = {
    "/",
    "/login",
    "/regeneration",
    "/static",
    "/public",
    "/api/conversations/{conversation_id}/stream",
    "/v1/models",
    "/v1/models/{model}",
    "/v1/chat/completions",
    "/mcp",
    "/api/transcriptions",
}
"""HTML pages, static files, the WebSocket, and the OpenAI and MCP doors, which follow those protocols' own
specifications, and the raw-audio upload (all described in info.description instead)."""
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance, content_type_conformance]
MAX_EXAMPLES = 25


async def test_document_covers_every_json_route_and_declares_security(ecosystem: Running) -> None:
    status, doc = await ecosystem.get("/api/openapi.json")
    assert status == 200
    assert doc["openapi"] == "3.1.0"
    routed = {
        (r.method.lower(), r.resource.canonical)
        for r in ecosystem.gateway.app.router.routes()
        if r.resource and r.method != "HEAD" and r.resource.canonical not in NOT_IN_THE_DOCUMENT
    }
    documented = {(method, path) for path, ops in doc["paths"].items() for method in ops}
    assert documented == routed
    assert {op.path for op in OPERATIONS} == {path for _, path in routed}
    assert set(doc["components"]["securitySchemes"]) == {"bearer", "cookie"}
    assert "/stream" in doc["info"]["description"]
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            public = path in ("/healthz",) or (method, path) == ("post", "/api/session")
            assert op["security"] == ([] if public else [{"bearer": []}, {"cookie": []}]), (method, path)
            if not public:
                assert {"401", "403", "429"} <= set(op["responses"]), (method, path)
            for status_code, response in op["responses"].items():
                if int(status_code) >= 400:
                    assert response["content"]["application/json"]["schema"] == {
                        "$ref": "#/components/schemas/ErrorResponse"
                    }
    post_message = doc["paths"]["/api/conversations/{conversation_id}/messages"]["post"]
    assert post_message["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/PostMessage")
    assert doc["components"]["schemas"]["PostMessage"]["additionalProperties"] is False


async def test_openapi_needs_authentication(ecosystem: Running) -> None:
    async with ecosystem.http.get(ecosystem.at("/api/openapi.json"), headers={"Authorization": ""}) as response:
        assert response.status == 401


def fuzz(doc: dict[str, Any], base_url: str, token: str) -> list[str]:
    """Run every documented operation with generated input; the failures found (empty when clean)."""
    schema = schemathesis.openapi.from_dict(doc)
    headers = {"Authorization": f"Bearer {token}"}
    failures: list[str] = []
    calls = 0
    for result in schema.get_all_operations():
        operation = result.ok()

        @hypothesis.settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @hypothesis.given(case=operation.as_strategy())
        def run(case: Any) -> None:
            nonlocal calls
            calls += 1
            case.call_and_validate(base_url=base_url, headers=headers, checks=CHECKS, timeout=30)

        try:
            run()
        except (Exception, BaseExceptionGroup) as exc:  # schemathesis reports failures as an exception group
            failures.append(f"{operation.label}: {exc}")
    assert calls >= len(OPERATIONS) * 5, calls
    return failures


async def test_schemathesis_finds_no_server_errors_or_undocumented_responses(tmp_path: Path) -> None:
    settings = ecosystem_settings(
        tmp_path,
        None,
        mads=GATEWAY_MADS,
        gateway={"rate_per_principal": 1000, "burst_per_principal": 10_000, "login_burst_per_ip": 10_000},
        sections={"mcnamara": {"rules": {"auth_failures": {"count": 100_000, "window_s": 1, "cooldown_s": 0}}}},
    )
    async with running(settings) as eco:
        status, doc = await eco.get("/api/openapi.json")
        assert status == 200
        failures = await asyncio.to_thread(fuzz, doc, eco.url.rstrip("/"), eco.token)
    assert not failures, "\n\n".join(failures)
