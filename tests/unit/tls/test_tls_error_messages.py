"""What the issuer says when the CA refuses: the acme library's own error objects,
as the library raises them from a CA's problem documents (RFC 8555, section 6.7).
pebble does not rate-limit, so a rate limit is not exercised end to end; this is
where its wording is held."""

from __future__ import annotations

from acme import messages

from hostmesh.tls.issuer import _describe


def test_a_rate_limit_says_so_and_that_it_is_retried():
    exc = messages.Error.with_code(
        "rateLimited", detail="too many certificates (5) already issued for this exact set")
    said = _describe(exc)
    assert "rate limited" in said and "retried with backoff" in said
    assert "too many certificates (5)" in said


def test_another_refusal_names_the_problem_type_and_detail():
    exc = messages.Error.with_code("unauthorized", detail="account is not authorized")
    said = _describe(exc)
    assert said.startswith("the CA refused: unauthorized") and "account is not authorized" in said
