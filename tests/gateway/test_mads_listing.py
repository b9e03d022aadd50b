"""``GET /api/mads`` is served from a cached body that follows every change of the directory."""

from __future__ import annotations

from tests.support.ecosystem import Running
from tests.support.waiting import eventually_async


async def names_listed(ecosystem: Running) -> set[str]:
    status, body = await ecosystem.get("/api/mads")
    assert status == 200, body
    return {m["name"] for m in body["mads"]}


async def test_a_mad_going_down_and_coming_back_is_seen_at_once(ecosystem: Running) -> None:
    assert {"fiedler", "grace", "rogers"} <= await names_listed(ecosystem)
    assert await names_listed(ecosystem) == await names_listed(ecosystem), "cached between changes"
    [announcer] = [a for a in ecosystem.host._announcers if a.announcement.mad == "fiedler"]

    await announcer.stop()

    async def fiedler_gone() -> bool:
        return "fiedler" not in await names_listed(ecosystem)

    await eventually_async(fiedler_gone, what="fiedler gone from /api/mads")

    await announcer.start()

    async def fiedler_back() -> bool:
        return "fiedler" in await names_listed(ecosystem)

    await eventually_async(fiedler_back, what="fiedler back in /api/mads")
