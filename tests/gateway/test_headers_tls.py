"""Security headers on every kind of response, and TLS with HSTS from a certificate made in the test."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.security_headers import CSP
from tests.gateway.conftest import GATEWAY_MADS
from tests.support.ecosystem import Running, ecosystem_settings, running
from tests.support.llm_server import ScriptedLLM

EXPECTED = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def assert_security_headers(headers: aiohttp.typedefs.LooseHeaders, what: str) -> None:
    for name, value in EXPECTED.items():
        assert headers.get(name) == value, (what, name, headers.get(name))  # type: ignore[union-attr]


async def test_every_kind_of_response_carries_the_security_headers(ecosystem: Running) -> None:
    assert "script-src 'self'" in CSP and "'unsafe-inline'" not in CSP and "frame-ancestors 'none'" in CSP
    cases = [
        ("GET", "/api/mads", True, 200),
        ("GET", "/api/conversations/nope-404", True, 404),
        ("GET", "/no/such/route", True, 404),
        ("DELETE", "/api/mads", True, 405),
        ("GET", "/api/conversations", False, 401),
        ("GET", "/login", False, 200),
        ("GET", "/public/login.js", False, 200),
        ("GET", "/static/app.js", True, 200),
        ("GET", "/", True, 200),
        ("GET", "/healthz", False, 200),
    ]
    async with aiohttp.ClientSession() as anonymous:
        for method, path, signed_in, status in cases:
            http = ecosystem.http if signed_in else anonymous
            async with http.request(method, ecosystem.at(path)) as response:
                assert response.status == status, (path, response.status)
                assert_security_headers(response.headers, path)
                assert "Strict-Transport-Security" not in response.headers, "no HSTS without TLS"
                if path.startswith(("/api/", "/healthz")) or status >= 400:
                    assert response.headers["Cache-Control"] == "no-store", path
    async with ecosystem.http.get(ecosystem.at("/static/app.js")) as response:
        assert response.content_type == "text/javascript" or "javascript" in response.content_type


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


async def test_tls_serves_https_with_hsts_and_secure_host_cookies(tmp_path: Path, llm_server: ScriptedLLM) -> None:
    cert, key = self_signed(tmp_path)
    settings = ecosystem_settings(
        tmp_path / "data",
        llm_server.base_url,
        mads=GATEWAY_MADS,
        gateway={"tls_cert": str(cert), "tls_key": str(key)},
    )
    trust = ssl.create_default_context(cafile=str(cert))
    async with running(settings) as eco:
        assert eco.url.startswith("https://127.0.0.1:")
        connector = aiohttp.TCPConnector(ssl=trust)
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(connector=connector, cookie_jar=jar) as http:
            async with http.get(eco.at("/healthz")) as response:
                assert response.status == 200
                assert response.headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
                assert_security_headers(response.headers, "/healthz over TLS")
            async with http.post(eco.at("/api/session"), json={"token": eco.token}) as response:
                assert response.status == 200
                [cookie] = response.headers.getall("Set-Cookie")
            assert cookie.startswith("__Host-mad_session=") and "Secure" in cookie and "HttpOnly" in cookie
            async with http.get(eco.at("/api/session")) as response:
                assert response.status == 200, "the Secure cookie goes back over https"
        async with aiohttp.ClientSession() as plain:
            try:
                async with plain.get(eco.at("/healthz").replace("https://", "http://")) as response:
                    assert response.status >= 400
            except aiohttp.ClientError:
                pass
