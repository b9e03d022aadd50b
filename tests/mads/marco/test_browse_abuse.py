"""Marco under abuse: SSRF by redirect and by DNS, schemes, credentials, caps, slow servers, bad content.

The ecosystem allowlists exactly ``127.0.0.1:<pages.port>``; the decoy server on another loopback port
stands for every internal service, and its hit counter proves refusals happen before connecting. No
traffic ever goes to a non-loopback address: those refusals happen before any connection is attempted.
/healthz is polled while every case runs and checked afterwards.
"""

from __future__ import annotations

from typing import Any

import pytest

from bus.envelope import Envelope
from mads.marco.fetch import FetchLimits, RefusedHop, SafeFetcher
from mads.marco.pinned_resolver import system_resolver
from mads.marco.url_policy import UrlPolicy
from tests.mads.marco.conftest import MarcoEco
from tests.support.sandbox_ecosystem import call_tool, result_of, while_serving
from tests.support.web_pages import TRICKLE_BYTES, Pages


async def browse(m: MarcoEco, *, during: bool = False, **arguments: Any) -> Envelope:
    """Call browse over the bus while polling /healthz (``during``: require an answer mid-call)."""
    reply = await while_serving(
        m.eco, call_tool(m.eco.host.bus, "marco", "browse", arguments, conversation_id="abuse"), require_during=during
    )
    status, body = await m.eco.get("/healthz")
    assert status == 200 and "marco" in body["mads_alive"], body
    return reply


def refused(reply: Envelope, reason: str) -> str:
    assert reply.error is not None, reply
    assert reply.error.code == "url_refused", reply.error
    assert f"[{reason}]" in reply.error.message, reply.error.message
    return reply.error.message


async def test_a_legitimate_page_is_read_in_the_cell(marco: MarcoEco, pages: Pages) -> None:
    page = result_of(await browse(marco, during=True, url=pages.url("/page"), selector="div.note"))
    assert page["url"] == pages.url("/page") and page["status"] == 200
    assert page["title"] == "Local page"
    assert "Hello from loopback" in page["text"] and "secret" not in page["text"]
    assert [link["url"] for link in page["links"]] == [pages.url("/other"), "https://example.org/x"]
    assert [(s["tag"], s["text"]) for s in page["selected"]] == [("div", "first note")]
    assert page["truncated"] is False and page["redirects"] == []


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("http://127.0.0.1:{decoy}/page", "loopback"),
        ("http://[::1]:{decoy}/page", "loopback"),
        ("http://[::ffff:127.0.0.1]:{decoy}/page", "loopback"),
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://[fd00:ec2::254]/latest/meta-data/", "metadata"),
        ("http://[::ffff:169.254.169.254]/", "metadata"),
        ("http://10.0.0.1/admin", "private"),
        ("http://192.168.1.1/", "private"),
        ("http://172.16.0.1/", "private"),
        ("http://100.64.0.1/", "cgnat"),
        ("http://0.0.0.0:{decoy}/page", "unspecified"),
        ("http://224.0.0.1/", "multicast"),
        ("http://localhost:{decoy}/page", "loopback"),
        ("http://internal.test/", "private"),
        ("http://metadata.test/", "metadata"),
    ],
)
async def test_redirects_to_internal_addresses_are_refused_before_connecting(
    marco: MarcoEco, pages: Pages, decoy: Pages, target: str, reason: str
) -> None:
    location = target.format(decoy=decoy.port)
    reply = await browse(marco, url=pages.url("/redirect") + "?to=" + location)
    refused(reply, reason)
    assert pages.hits["/redirect"] == 1
    assert sum(decoy.hits.values()) == 0
    event = await marco.refused.wait_for(lambda e: e["reason"] == reason)
    assert event["mad"] == "marco" and event["hop"] == 1 and event["conversation_id"] == "abuse"
    assert event["url"] == location.split("?", 1)[0]


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:{decoy}/page", "loopback"),
        ("http://localhost:{decoy}/page", "loopback"),
        ("http://127.1:{decoy}/page", "loopback"),
        ("http://2130706433:{decoy}/page", "loopback"),
        ("http://internal.test/", "private"),
        ("http://mixed.test:{pages}/page", "private"),
    ],
)
async def test_names_and_odd_literals_resolving_inside_are_refused(
    marco: MarcoEco, pages: Pages, decoy: Pages, url: str, reason: str
) -> None:
    reply = await browse(marco, url=url.format(decoy=decoy.port, pages=pages.port))
    refused(reply, reason)
    assert sum(decoy.hits.values()) == 0 and sum(pages.hits.values()) == 0
    event = await marco.refused.wait_for(lambda e: e["reason"] == reason)
    assert event["hop"] == 0


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("file:///etc/passwd", "scheme"),
        ("gopher://127.0.0.1:70/_GET", "scheme"),
        ("ftp://127.0.0.1/", "scheme"),
        ("javascript:alert(1)", "scheme"),
        ("data:text/html,<b>x</b>", "scheme"),
        ("http://admin:hunter2@127.0.0.1:{pages}/page?token=s3cret", "credentials"),
        ("http://user@127.0.0.1:{pages}/page", "credentials"),
        ("http:///nohost", "malformed"),
    ],
)
async def test_schemes_credentials_and_malformed_urls_are_refused(
    marco: MarcoEco, pages: Pages, url: str, reason: str
) -> None:
    message = refused(await browse(marco, url=url.format(pages=pages.port)), reason)
    assert sum(pages.hits.values()) == 0
    event = await marco.refused.wait_for(lambda e: e["reason"] == reason)
    for secret in ("hunter2", "s3cret", "token"):
        assert secret not in event["url"] and secret not in message


async def test_redirect_to_a_file_url_is_refused(marco: MarcoEco, pages: Pages) -> None:
    refused(await browse(marco, url=pages.url("/redirect?status=307&to=file:///etc/passwd")), "scheme")
    assert (await marco.refused.wait_for(lambda e: e["reason"] == "scheme"))["hop"] == 1


async def test_allowlist_off_refuses_even_the_legitimate_server(pages: Pages) -> None:
    limits = FetchLimits(max_bytes=10_000, max_redirects=2, connect_timeout=2, read_timeout=2, total_timeout=5)
    fetcher = SafeFetcher(UrlPolicy(), system_resolver(), user_agent="test")
    with pytest.raises(RefusedHop) as caught:
        await fetcher.fetch(pages.url("/page"), limits)
    assert caught.value.refusal.reason == "loopback"
    assert sum(pages.hits.values()) == 0
    private_ok = SafeFetcher(UrlPolicy(allow_private=True), system_resolver(), user_agent="test")
    assert (await private_ok.fetch(pages.url("/page"), limits)).status == 200
    with pytest.raises(RefusedHop) as caught:
        await private_ok.fetch("http://169.254.169.254/latest/", limits)
    assert caught.value.refusal.reason == "metadata"


async def test_redirect_chains_are_followed_and_capped(marco: MarcoEco, pages: Pages) -> None:
    page = result_of(await browse(marco, url=pages.url("/chain/2")))
    assert page["url"] == pages.url("/page") and page["redirects"] == [pages.url("/chain/2"), pages.url("/chain/1")]
    for path in ("/chain/4", "/loop"):
        reply = await browse(marco, url=pages.url(path))
        assert reply.error is not None and reply.error.code == "too_many_redirects", reply.error
    event = await marco.limits.wait_for(lambda e: e["limit"] == "redirects")
    assert event["mad"] == "marco" and event["tool"] == "browse" and event["violation"] is False


async def test_oversized_body_is_cut_at_max_bytes(marco: MarcoEco, pages: Pages) -> None:
    page = result_of(await browse(marco, url=pages.url("/big"), max_bytes=50_000))
    assert page["truncated"] is True and "filler" in page["text"]
    assert (await marco.limits.wait_for(lambda e: e["limit"] == "max_bytes"))["conversation_id"] == "abuse"
    too_big = await browse(marco, url=pages.url("/big"), max_bytes=10**9)
    assert too_big.error is not None and too_big.error.code == "invalid_arguments"
    assert [f.field for f in too_big.error.fields] == ["content.0.arguments.max_bytes"]


async def test_gzip_bomb_stops_at_max_bytes(marco: MarcoEco, pages: Pages) -> None:
    page = result_of(await browse(marco, url=pages.url("/bomb"), max_bytes=100_000))
    assert page["truncated"] is True
    assert len(page["text"]) <= 100_000


async def test_slow_loris_hits_the_total_deadline(marco: MarcoEco, pages: Pages) -> None:
    reply = await browse(marco, during=True, url=pages.url("/trickle"))
    assert reply.error is not None and reply.error.code == "deadline_exceeded", reply.error
    assert "2 s deadline" in reply.error.message
    assert pages.hits["/trickle"] == 1
    event = await marco.limits.wait_for(lambda e: e["limit"] == "total_timeout")
    assert "/trickle" in event["detail"]
    assert TRICKLE_BYTES > 2 / 0.05  # the server would still be trickling at the deadline


@pytest.mark.parametrize("kind", ["json", "binary", "octet"])
async def test_non_html_content_types_are_refused_clearly(marco: MarcoEco, pages: Pages, kind: str) -> None:
    reply = await browse(marco, url=pages.url(f"/typed/{kind}"))
    assert reply.error is not None and reply.error.code == "unsupported_content_type", reply.error
    assert "accepted: application/xhtml+xml, text/html, text/plain" in reply.error.message


async def test_plain_text_and_xhtml_are_accepted(marco: MarcoEco, pages: Pages) -> None:
    text = result_of(await browse(marco, url=pages.url("/typed/text")))
    assert text["content_type"] == "text/plain" and text["text"] == "plain words\nsecond line"
    xhtml = result_of(await browse(marco, url=pages.url("/typed/xhtml")))
    assert xhtml["title"] == "Local page"


async def test_malformed_html_still_gives_a_result(marco: MarcoEco, pages: Pages) -> None:
    page = result_of(await browse(marco, url=pages.url("/malformed")))
    assert page["title"] == "Broken"
    assert "unclosed" in page["text"] and "bold" in page["text"]
    assert [link["url"] for link in page["links"]] == [pages.url("/x")]


async def test_bad_arguments_name_the_field(marco: MarcoEco, pages: Pages) -> None:
    reply = await browse(marco, url=pages.url("/page"), selector="a >")
    assert reply.error is not None and reply.error.code == "invalid_arguments"
    assert [f.field for f in reply.error.fields] == ["content.0.arguments.selector"]
    assert sum(pages.hits.values()) == 0
