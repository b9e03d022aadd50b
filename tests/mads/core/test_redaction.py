"""Redactor: encodings, overlaps, many secrets, threads, logging, nested structures."""

from __future__ import annotations

import base64
import json
import logging
import threading
from urllib.parse import quote, quote_plus

import pytest
from pydantic import SecretStr

from mads.core.redaction import REDACTED, RedactingFilter, SecretRedactor


@pytest.fixture
def r() -> SecretRedactor:
    return SecretRedactor()


def test_raw_value_redacted(r: SecretRedactor) -> None:
    r.register("sk-abc123XYZ")
    assert r.redact("key=sk-abc123XYZ; again sk-abc123XYZ.") == f"key={REDACTED}; again {REDACTED}."
    assert r.redact("nothing here") == "nothing here"


def test_encodings_redacted(r: SecretRedactor) -> None:
    secret = 'p@ss "wörd"/+&=\n1'
    r.register(secret)
    b = secret.encode()
    forms = {
        "json": json.dumps({"k": secret}),
        "json-ascii": json.dumps({"k": secret}, ensure_ascii=True),
        "json-utf8": json.dumps({"k": secret}, ensure_ascii=False),
        "url": "https://h/?k=" + quote(secret, safe=""),
        "url-plus": "https://h/?k=" + quote_plus(secret),
        "b64": "Basic " + base64.b64encode(b).decode(),
        "b64url": base64.urlsafe_b64encode(b).decode(),
        "b64-unpadded": base64.b64encode(b).decode().rstrip("=") + "!",
    }
    for name, text in forms.items():
        out = r.redact(text)
        assert REDACTED in out, name
        assert secret not in out and quote(secret, safe="") not in out, name
        assert base64.b64encode(b).decode().rstrip("=") not in out, name


def test_short_values_ignored_and_base64_only_from_8(r: SecretRedactor) -> None:
    r.register("12345")
    assert r.redact("pin 12345") == "pin 12345"
    assert len(r) == 0
    r.register("abcdef7")
    assert r.redact("abcdef7") == REDACTED
    assert r.redact(base64.b64encode(b"abcdef7").decode()) == base64.b64encode(b"abcdef7").decode()


def test_longer_overlapping_secret_redacted_whole(r: SecretRedactor) -> None:
    r.register("token-abcdef")
    r.register("token-abcdef-extended")
    assert r.redact("x token-abcdef-extended y token-abcdef z") == f"x {REDACTED} y {REDACTED} z"


def test_many_secrets(r: SecretRedactor) -> None:
    secrets = [f"sk-{i:06d}-{i * 7919 % 100003:06d}" for i in range(2000)]
    for s in secrets:
        r.register(s)
    text = " | ".join(secrets[::97]) + " | sk-999999-notreal"
    out = r.redact(text)
    assert all(s not in out for s in secrets)
    assert out.endswith("sk-999999-notreal")


def test_deeply_nested_prefixes_fall_back_and_still_redact(r: SecretRedactor) -> None:
    secrets = ["q" * n + "Z" for n in range(6, 300)]
    for s in secrets:
        r.register(s)
    assert r.redact("<" + secrets[-1] + ">") == f"<{REDACTED}>"
    assert r.redact("<" + secrets[0] + ">") == f"<{REDACTED}>"


def test_thread_safe_registration_and_redaction(r: SecretRedactor) -> None:
    errors: list[str] = []
    start = threading.Barrier(8)

    def worker(n: int) -> None:
        start.wait(timeout=10)
        for i in range(200):
            secret = f"thread{n}-secret-{i:04d}"
            r.register(secret)
            out = r.redact(f"a {secret} b")
            if out != f"a {REDACTED} b":
                errors.append(out)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == [] and len(r) == 1600


def test_logging_filter_redacts_message_args_and_traceback(r: SecretRedactor) -> None:
    secret = "sk-log-leak-424242"
    r.register(secret)
    records: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    handler = Capture()
    handler.addFilter(RedactingFilter(r))
    log = logging.getLogger("test.turing.redactor")
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.INFO)
    try:
        log.info("direct %s", secret)
        log.info(f"inline {secret}")
        log.info("dict %(k)s", {"k": secret})
        try:
            raise RuntimeError(f"boom {secret}")
        except RuntimeError:
            log.exception("failed with %r", {"token": secret})
    finally:
        log.removeHandler(handler)
    assert len(records) == 4
    assert all(secret not in rec for rec in records), records
    assert records[0] == f"direct {REDACTED}"
    assert "RuntimeError: boom [REDACTED]" in records[3]


def test_redact_structure(r: SecretRedactor) -> None:
    r.register("nested-secret-1")
    data = {
        "a": ["x nested-secret-1 y", {"nested-secret-1": ("nested-secret-1",)}],
        "n": 5,
        "s": SecretStr("anything"),
        "keep": "fine",
    }
    assert r.redact_structure(data) == {
        "a": [f"x {REDACTED} y", {REDACTED: (REDACTED,)}],
        "n": 5,
        "s": REDACTED,
        "keep": "fine",
    }
