"""First run: an empty auth store gets an ``admin`` operator token; the console gets a one-time login link and,
on its own line, the token.

The link carries a single-use code (:mod:`gateway.auth.login_codes`), not the token, in
the URL *fragment* (``/login#code=…``): browsers never send fragments to the server, so
it cannot land in access logs or proxies; the login page reads it, exchanges it for a
session, and wipes it from the address bar. Used once (or after its expiry) the link is
worthless. The long-lived token is printed separately, for API clients. Both are printed
exactly once, when the store had no principals; later starts print nothing.
"""

from __future__ import annotations

import sys
from typing import TextIO

from gateway.auth.audit import AuthAudit
from gateway.auth.login_codes import LoginCodes
from gateway.auth.store import AuthStore, Issued, Role

ADMIN = "admin"


async def issue_token(
    store: AuthStore, audit: AuthAudit, name: str, role: Role, *, actor: str, expires_days: int | None = None
) -> Issued:
    """Create a token and put its creation on the audit record; an unrecorded token is revoked again."""
    issued = await store.create(name, role, expires_days)
    details = {
        "token_id": issued.info.id,
        "principal": name,
        "role": role,
        "expires_at": issued.info.expires_at.isoformat() if issued.info.expires_at else None,
    }
    try:
        await audit.record("auth.token_create", actor, "token_create", details)
    except BaseException:
        await store.revoke(issued.info.id)
        raise
    return issued


async def first_run(
    store: AuthStore, audit: AuthAudit, codes: LoginCodes, base_url: str, out: TextIO | None = None
) -> bool:
    """If nobody can sign in yet, make the admin token and print a one-time login link and, apart, the token."""
    if await store.principal_count() > 0:
        return False
    issued = await issue_token(store, audit, ADMIN, "operator", actor="gateway.first_run")
    code = codes.issue(issued.info.id)
    link = f"{base_url.rstrip('/')}/login#code={code}"
    minutes = round(codes.ttl / 60)
    stream = out or sys.stdout
    print(f"First run: sign in as {ADMIN} (operator) at {link} (one-time link, valid {minutes} minutes)", file=stream)
    print(
        f"API token for {ADMIN} (shown once; keep it secret; use it as 'Authorization: Bearer <token>' or paste it "
        f"on the login page): {issued.token}",
        file=stream,
        flush=True,
    )
    return True
