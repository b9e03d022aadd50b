"""Authentication at the gateway: the public set, bearer tokens, cookie sessions and CSRF, roles, revocation."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import aiohttp

from gateway.auth.guard import PUBLIC_ROUTES
from tests.gateway.conftest import assert_error
from tests.support.ecosystem import Running

SAMPLE_PATHS = {"/static": "/static/app.js", "/public": "/public/login.js"}


@asynccontextmanager
async def browser() -> AsyncIterator[aiohttp.ClientSession]:
    """A client with no credentials that keeps cookies (also for 127.0.0.1, like a browser would)."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        yield http


async def login(eco: Running, http: aiohttp.ClientSession, token: str | None = None) -> dict[str, Any]:
    async with http.post(eco.at("/api/session"), json={"token": token or eco.token}) as response:
        assert response.status == 200, await response.text()
        return await response.json()


def concrete(canonical: str) -> str:
    if canonical in SAMPLE_PATHS:
        return SAMPLE_PATHS[canonical]
    return re.sub(r"\{[^}]+\}", "x1", canonical)


async def test_every_route_outside_the_public_set_answers_401_without_credentials(ecosystem: Running) -> None:
    routes = {(r.method, r.resource.canonical) for r in ecosystem.gateway.app.router.routes() if r.resource}
    assert routes >= PUBLIC_ROUTES, PUBLIC_ROUTES - routes
    assert len(routes - PUBLIC_ROUTES) >= 12
    async with browser() as http:
        for method, canonical in sorted(routes):
            async with http.request(
                method, ecosystem.at(concrete(canonical)), json={} if method == "POST" else None
            ) as r:
                if (method, canonical) in PUBLIC_ROUTES:
                    assert r.status != 401, (method, canonical)
                    continue
                assert r.status == 401, (method, canonical, r.status)
                assert r.headers["WWW-Authenticate"].startswith("Bearer")
                if method != "HEAD":
                    assert_error(await r.json(), "unauthorized")


async def test_public_routes_serve_no_stored_data(ecosystem: Running, llm_server: Any) -> None:
    secret_title = "Quarterly-figures-zq81"
    cid = await ecosystem.new_conversation(secret_title)
    await ecosystem.say(cid, "/grace list_mads")
    async with browser() as http:
        for path in ("/login", "/public/login.js", "/public/login.css", "/healthz"):
            async with http.get(ecosystem.at(path)) as response:
                assert response.status == 200, path
                text = await response.text()
            assert secret_title not in text and cid not in text and "tester" not in text, path
        async with http.post(ecosystem.at("/api/session"), json={"token": "mad_" + "A" * 43}) as response:
            assert response.status == 401
            assert secret_title not in await response.text()


async def test_browser_navigation_without_a_session_goes_to_login(ecosystem: Running) -> None:
    async with browser() as http:
        async with http.get(ecosystem.at("/"), headers={"Accept": "text/html"}, allow_redirects=False) as response:
            assert response.status == 303
            assert response.headers["Location"] == "/login"
        async with http.get(ecosystem.at("/login")) as response:
            assert response.status == 200 and response.content_type == "text/html"
            page = await response.text()
    assert 'src="/public/login.js"' in page and "<script>" not in page


async def test_login_sets_a_strict_httponly_cookie_and_the_page_then_loads(ecosystem: Running) -> None:
    async with browser() as http:
        async with http.post(ecosystem.at("/api/session"), json={"token": ecosystem.token}) as response:
            assert response.status == 200
            body = await response.json()
            [cookie] = response.headers.getall("Set-Cookie")
        assert body["principal"] == "tester" and body["role"] == "operator" and body["via"] == "session"
        assert len(body["csrf_token"]) >= 32
        assert cookie.startswith("mad_session=")
        flags = {f.strip().split("=")[0].lower(): f.strip() for f in cookie.split(";")[1:]}
        assert "httponly" in flags and flags["samesite"] == "SameSite=Strict" and flags["path"] == "Path=/"
        assert "secure" not in flags, "Secure is only set when TLS is on"
        assert ecosystem.token not in cookie
        async with http.get(ecosystem.at("/"), headers={"Accept": "text/html"}) as response:
            assert response.status == 200 and "Grace" in await response.text()
        async with http.get(ecosystem.at("/api/session")) as response:
            again = await response.json()
        assert again["csrf_token"] == body["csrf_token"]


async def test_cookie_sessions_need_the_csrf_token_for_state_changes(ecosystem: Running) -> None:
    async with browser() as http:
        session = await login(ecosystem, http)
        async with http.post(ecosystem.at("/api/conversations"), json={}) as response:
            assert response.status == 403
            assert_error(await response.json(), "csrf_failed")
        wrong = {"X-CSRF-Token": session["csrf_token"][:-1] + ("A" if session["csrf_token"][-1] != "A" else "B")}
        async with http.post(ecosystem.at("/api/conversations"), json={}, headers=wrong) as response:
            assert response.status == 403
        async with http.get(ecosystem.at("/api/conversations")) as response:
            assert response.status == 200, "reads need no CSRF token"
        right = {"X-CSRF-Token": session["csrf_token"]}
        async with http.post(ecosystem.at("/api/conversations"), json={"title": "t"}, headers=right) as response:
            assert response.status == 201
            assert (await response.json())["created_by"] == "user.tester"
        async with http.post(ecosystem.at("/api/session/logout"), headers=right) as response:
            assert response.status == 204
        async with http.get(ecosystem.at("/api/conversations")) as response:
            assert response.status == 401


async def test_bearer_tokens_need_no_csrf_token(ecosystem: Running) -> None:
    status, body = await ecosystem.post("/api/conversations", {"title": "scripted"})
    assert status == 201 and body["created_by"] == "user.tester"
    status, me = await ecosystem.get("/api/session")
    assert status == 200 and me == {
        "principal": "tester",
        "role": "operator",
        "via": "bearer",
        "csrf_token": None,
        "expires_in": None,
    }


async def test_bad_revoked_and_expired_tokens_are_401(ecosystem: Running) -> None:
    gateway = ecosystem.gateway
    issued = await gateway.issue_token("carol", "user", expires_days=1)
    async with browser() as http:
        headers = {"Authorization": f"Bearer {issued.token}"}
        async with http.get(ecosystem.at("/api/conversations"), headers=headers) as response:
            assert response.status == 200
        session = await login(ecosystem, http, issued.token)
        async with http.get(ecosystem.at("/api/session")) as response:
            assert (await response.json())["csrf_token"] == session["csrf_token"]

        store = gateway.auth.store
        real_clock = store.clock
        store.clock = lambda: real_clock() + timedelta(days=2)
        try:
            async with http.get(ecosystem.at("/api/conversations"), headers=headers) as response:
                assert response.status == 401, "expired"
                assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
        finally:
            store.clock = real_clock

        await store.revoke(issued.info.id)
        async with http.get(ecosystem.at("/api/conversations"), headers=headers) as response:
            assert response.status == 401, "revoked"
        async with http.get(ecosystem.at("/api/session")) as response:
            assert response.status == 401, "a revoked token's sessions end too"
        async with http.post(ecosystem.at("/api/session"), json={"token": issued.token}) as response:
            assert response.status == 401
            assert_error(await response.json(), "invalid_token")
        async with http.get(ecosystem.at("/api/mads"), headers={"Authorization": "Basic dTpw"}) as response:
            assert response.status == 401


async def test_login_body_is_validated_and_named(ecosystem: Running) -> None:
    async with browser() as http:
        async with http.post(ecosystem.at("/api/session"), json={"tok": "x"}) as response:
            assert response.status == 422
            assert_error(await response.json(), "invalid_request", "body.tok")
        async with http.post(ecosystem.at("/api/session"), data="token=x") as response:
            assert response.status == 415


async def test_acknowledging_alerts_needs_the_operator_role(ecosystem: Running) -> None:
    issued = await ecosystem.gateway.issue_token("dave", "user")
    headers = {"Authorization": f"Bearer {issued.token}"}
    async with browser() as http:
        async with http.get(ecosystem.at("/api/alerts"), headers=headers) as response:
            assert response.status == 200 and (await response.json()) == {"alerts": []}
        async with http.post(ecosystem.at("/api/alerts/abc/acknowledge"), headers=headers) as response:
            assert response.status == 403
            assert_error(await response.json(), "forbidden")
    status, body = await ecosystem.post("/api/alerts/abc/acknowledge")
    assert status == 404, body


async def test_an_internal_failure_leaks_no_detail(ecosystem: Running) -> None:
    await ecosystem.gateway.auth.store.close()
    status, body = await ecosystem.get("/api/mads")
    assert status == 500
    error = assert_error(body, "internal_error")
    assert re.fullmatch(r"internal error \(reference [0-9a-f]{32}\)", error["message"]), error
    text = str(body)
    assert "auth store" not in text and "RuntimeError" not in text and ".py" not in text
