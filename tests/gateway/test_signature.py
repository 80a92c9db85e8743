"""Signatures: GitHub's X-Hub-Signature-256 format, checked in constant time."""

from __future__ import annotations

import hashlib
import hmac

from gateway.signature import sign, signature_ok, signing_key

BODY = b'{"action":"opened"}'


def github_header(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def test_sign_matches_githubs_format() -> None:
    assert sign(b"s3cret", BODY) == github_header(b"s3cret", BODY)


def test_good_signature_passes_and_tolerates_case_and_spaces() -> None:
    header = github_header(b"s3cret", BODY)
    assert signature_ok(b"s3cret", BODY, header)
    assert signature_ok(b"s3cret", BODY, " " + header.upper().replace("SHA256=", "sha256=") + " ")


def test_bad_signatures_fail() -> None:
    good = github_header(b"s3cret", BODY)
    assert not signature_ok(b"s3cret", BODY, None)
    assert not signature_ok(b"s3cret", BODY, "")
    assert not signature_ok(b"s3cret", BODY, good.removeprefix("sha256="))  # no scheme
    assert not signature_ok(b"s3cret", BODY, "sha1=" + good[7:])
    assert not signature_ok(b"other", BODY, good)
    assert not signature_ok(b"s3cret", BODY + b" ", good)
    assert not signature_ok(b"", BODY, good)
    assert not signature_ok(b"s3cret", BODY, "sha256=\u00e9\u00e9")  # non-ASCII must not raise


def test_signing_key_is_the_secret_or_derived_from_the_token() -> None:
    assert signing_key("a-configured-secret", "token") == b"a-configured-secret"
    derived = signing_key("", "admin-token-123")
    expected = hmac.new(b"admin-token-123", b"hearth-callback-v1", hashlib.sha256).hexdigest()
    assert derived == expected.encode()
    assert b"admin-token-123" not in derived
