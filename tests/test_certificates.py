"""The pure half of certificates: PEM pairs checked, names matched, expiry refused, and the
renewal and backoff decisions, on a fake clock."""

import datetime

import pytest

from dokuen.tls.certificates import (
    CertificateError,
    CertInfo,
    check_pair,
    check_usable,
    covers,
    describe,
    needs_new,
    renew_at,
    retry_delay,
)
from tests.e2e.pebble import MiniCa

DAY = datetime.timedelta(days=1)
CA = MiniCa()


def info(days: int, names: tuple[str, ...] = ("blog.example.com",)) -> CertInfo:
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    return CertInfo(names, "Test CA", start, start + days * DAY, "ab", ocsp=False)


def test_a_matching_pair_is_described() -> None:
    issued = CA.issue(["blog.example.com", "www.example.com"])
    described = check_pair(issued.cert, issued.key)
    assert described.names == ("blog.example.com", "www.example.com")
    assert described.issuer == "Dokuen test CA"
    assert described.not_after - described.not_before == 90 * DAY
    assert described == describe(issued.cert)


@pytest.mark.parametrize(
    ("cert", "key", "reason"),
    [
        ("other", "good", "the certificate does not match the key"),
        ("junk", "good", "the certificate file holds no PEM certificate"),
        ("good", "junk", "the key file holds no PEM private key"),
        ("good", "empty", "the key file holds no PEM private key"),
    ],
)
def test_a_bad_pair_is_refused_with_the_reason(cert: str, key: str, reason: str) -> None:
    good, other = CA.issue(["a.example.com"]), CA.issue(["a.example.com"])
    pems = {"good": good.cert, "other": other.cert, "junk": b"-----BEGIN nothing", "empty": b""}
    keys = {"good": good.key, "junk": b"not a key", "empty": b""}
    with pytest.raises(CertificateError, match=reason):
        check_pair(pems[cert], keys[key])


def test_usable_only_when_valid_now_and_for_one_of_the_hosts() -> None:
    cert = info(90, ("*.example.com",))
    now = cert.not_before + DAY
    check_usable(cert, ["blog.example.com"], now)
    with pytest.raises(CertificateError, match="expired on 2026-04-01"):
        check_usable(cert, ["blog.example.com"], cert.not_after)
    with pytest.raises(CertificateError, match="not valid before 2026-01-01"):
        check_usable(cert, ["blog.example.com"], cert.not_before - DAY)
    with pytest.raises(CertificateError, match=r"none of the app's hosts \(a.b.example.com\)"):
        check_usable(cert, ["a.b.example.com"], now)


@pytest.mark.parametrize(
    ("name", "host", "covered"),
    [
        ("blog.example.com", "blog.example.com", True),
        ("*.example.com", "blog.example.com", True),
        ("*.example.com", "example.com", False),
        ("*.example.com", "a.blog.example.com", False),
        ("blog.example.com", "www.example.com", False),
    ],
)
def test_names_cover_hosts(name: str, host: str, covered: bool) -> None:
    assert covers(name, host) is covered


def test_renewal_30_days_before_expiry_or_at_a_third_of_life_left() -> None:
    assert renew_at(info(90)) == info(90).not_after - 30 * DAY
    assert renew_at(info(365)) == info(365).not_after - 30 * DAY
    assert renew_at(info(6)) == info(6).not_after - 2 * DAY  # short-lived: a third


def test_what_makes_a_new_certificate_needed() -> None:
    cert = info(90)
    early = cert.not_before + DAY
    assert needs_new(None, ["blog.example.com"], early) == "no certificate yet"
    assert needs_new(cert, ["blog.example.com"], early) is None
    assert needs_new(cert, ["blog.example.com", "www.example.com"], early) == (
        "not valid for www.example.com"
    )
    assert needs_new(cert, ["blog.example.com"], renew_at(cert) - DAY) is None
    assert needs_new(cert, ["blog.example.com"], renew_at(cert)) == "expires on 2026-04-01"


def test_backoff_doubles_up_to_six_hours() -> None:
    assert [retry_delay(n) for n in (1, 2, 3, 4)] == [60, 120, 240, 480]
    assert retry_delay(30) == 6 * 3600
