"""Token checks are served from memory only while nobody has committed to the auth database."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from gateway.auth.store import AuthStore, TokenRejected


async def test_a_commit_by_another_connection_reaches_the_next_check(tmp_path: Path) -> None:
    gateway, cli = AuthStore(tmp_path), AuthStore(tmp_path)  # two connections, as the gateway and the tokens CLI
    await gateway.open()
    await cli.open()
    try:
        alice = await gateway.create("alice", "user", expires_days=1)
        bob = await gateway.create("bob", "operator")
        for _ in range(3):
            assert (await gateway.verify(alice.token)).principal == "alice"
            assert (await gateway.still_valid(bob.info.id)).role == "operator"

        await cli.revoke("alice")
        with pytest.raises(TokenRejected) as rejected:
            await gateway.verify(alice.token)
        assert rejected.value.reason == "revoked"
        assert (await gateway.verify(bob.token)).principal == "bob", "other tokens still verify"

        await cli.revoke(bob.info.id)
        with pytest.raises(TokenRejected):
            await gateway.still_valid(bob.info.id)
    finally:
        await cli.close()
        await gateway.close()


async def test_expiry_is_checked_against_the_clock_even_when_cached(tmp_path: Path) -> None:
    store = AuthStore(tmp_path)
    await store.open()
    try:
        issued = await store.create("carol", "user", expires_days=1)
        assert (await store.verify(issued.token)).principal == "carol"
        real = store.clock
        store.clock = lambda: real() + timedelta(days=2)
        with pytest.raises(TokenRejected) as rejected:
            await store.verify(issued.token)
        assert rejected.value.reason == "expired"
    finally:
        await store.close()


async def test_own_revocations_apply_at_once_and_unknown_tokens_stay_unknown(tmp_path: Path) -> None:
    store = AuthStore(tmp_path)
    await store.open()
    try:
        issued = await store.create("dave", "user")
        await store.verify(issued.token)
        await store.revoke("dave")
        with pytest.raises(TokenRejected):
            await store.verify(issued.token)
        unknown = issued.token[:-4] + ("aaaa" if not issued.token.endswith("aaaa") else "bbbb")
        for _ in range(2):
            with pytest.raises(TokenRejected) as rejected:
                await store.verify(unknown)
            assert rejected.value.reason in {"unknown", "malformed"}
    finally:
        await store.close()
