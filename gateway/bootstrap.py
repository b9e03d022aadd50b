"""First run: an empty auth store gets an ``admin`` operator token and the console gets one login link.

The token travels in the URL *fragment* (``/login#token=…``): browsers never send
fragments to the server, so it cannot land in access logs or proxies; the login
page reads it, signs in, and wipes it from the address bar. The link is printed
exactly once, when the store had no principals; later starts print nothing.
"""

from __future__ import annotations

import sys
from typing import TextIO

from gateway.auth.audit import AuthAudit
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


async def first_run(store: AuthStore, audit: AuthAudit, base_url: str, out: TextIO | None = None) -> bool:
    """If nobody can sign in yet, make the admin token and print the one-time login link. True if it did."""
    if await store.principal_count() > 0:
        return False
    issued = await issue_token(store, audit, ADMIN, "operator", actor="gateway.first_run")
    link = f"{base_url.rstrip('/')}/login#token={issued.token}"
    print(f"First run: sign in as {ADMIN} (operator) at {link}", file=out or sys.stdout, flush=True)
    return True
