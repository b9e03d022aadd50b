"""Security alerts from McNamara for Grace's page; acknowledging one is for operators."""

from __future__ import annotations

from aiohttp import web
from pydantic import JsonValue

from gateway.principal import principal_of, require_operator
from gateway.schemas import AlertList, AlertsQuery, EmptyBody, alert_id, read_body, read_query
from gateway.state import state_of
from mads.core import names

MCNAMARA = names.MCNAMARA
routes = web.RouteTableDef()


@routes.get("/api/alerts")
async def list_alerts(request: web.Request) -> web.Response:
    query = read_query(request, AlertsQuery)
    arguments: dict[str, JsonValue] = {"include_acknowledged": query.include_acknowledged}
    if query.since is not None:
        arguments["since"] = query.since.isoformat()
    found = await state_of(request).client.call(MCNAMARA, "alerts", arguments, principal=principal_of(request))
    return web.json_response(AlertList.model_validate({"alerts": found or []}).model_dump(mode="json"))


@routes.post("/api/alerts/{alert_id}/acknowledge")
async def acknowledge(request: web.Request) -> web.Response:
    require_operator(request)
    await read_body(request, EmptyBody)
    alert = await state_of(request).client.call(
        MCNAMARA, "acknowledge", {"id": alert_id(request)}, principal=principal_of(request)
    )
    return web.json_response(alert)
