"""The ACME client (RFC 8555), through certbot's ``acme`` library: register (or find) the
account, order a certificate for an app's hosts, answer each HTTP-01 challenge with a file
that nginx serves, finalize with a fresh key's CSR. Blocking code: the daemon runs it in a
worker thread (renewal.py), never on the event loop."""

import datetime
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import requests
from acme import challenges, client, crypto_util, errors, messages
from cryptography.hazmat.primitives import serialization
from josepy.jwk import JWKRSA

from dokuen.errors import DokuenError
from dokuen.tls.certificates import new_key_pem

USER_AGENT = "dokuen"
TIMEOUT = 30  # seconds for each HTTP request to the CA
ORDER_TIMEOUT = 90  # seconds for the CA to validate and issue


class AcmeError(DokuenError):
    """The CA could not be reached or did not issue; the message says what it said."""


@dataclass(frozen=True)
class Acme:
    """One CA: its directory URL, the bundle its TLS is checked with, the contact email."""

    directory: str
    ca_bundle: str | None
    email: str | None


def obtain(
    acme: Acme,
    account_key_pem: bytes,
    names: list[str],
    put_challenge: Callable[[str, str], Path],
) -> tuple[bytes, bytes]:
    """A certificate for ``names`` (the chain PEM, leaf first) and its new key (PEM).
    Raises AcmeError with one line naming the CA and what went wrong."""
    try:
        return _obtain(acme, account_key_pem, names, put_challenge)
    except requests.exceptions.ConnectionError as exc:
        raise AcmeError(
            f"cannot reach the ACME CA at {acme.directory} ({_reason(exc)}); check "
            "DOKUEN_ACME_DIRECTORY and the network"
        ) from exc
    except requests.exceptions.RequestException as exc:
        raise AcmeError(f"the ACME CA at {acme.directory} failed: {_reason(exc)}") from exc
    except messages.Error as exc:
        raise AcmeError(f"the ACME CA refused: {exc.detail or exc.typ}") from exc
    except errors.ValidationError as exc:
        problems = [
            str(c.error.detail)
            for authz in exc.failed_authzrs
            for c in authz.body.challenges
            if c.error is not None
        ]
        raise AcmeError(
            "the CA could not validate the HTTP-01 challenge"
            + (f": {'; '.join(problems)}" if problems else "")
            + " (do the app's hosts resolve to this machine, with port 80 forwarded?)"
        ) from exc
    except errors.TimeoutError as exc:
        raise AcmeError(f"the ACME CA did not issue within {ORDER_TIMEOUT}s") from exc
    except errors.Error as exc:
        raise AcmeError(f"ACME failed: {exc}") from exc


def _reason(exc: Exception) -> str:
    text = str(exc)
    for marker in ("Connection refused", "timed out", "CERTIFICATE_VERIFY_FAILED"):
        if marker in text:
            return marker.lower().replace("_", " ")
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _obtain(
    acme: Acme,
    account_key_pem: bytes,
    names: list[str],
    put_challenge: Callable[[str, str], Path],
) -> tuple[bytes, bytes]:
    account_key = JWKRSA(key=serialization.load_pem_private_key(account_key_pem, None))
    net = client.ClientNetwork(
        account_key,
        user_agent=USER_AGENT,
        # requests takes a CA bundle's path where the library says bool
        verify_ssl=acme.ca_bundle or True,  # type: ignore[arg-type]
        timeout=TIMEOUT,
    )
    directory = client.ClientV2.get_directory(acme.directory, net)
    ca = client.ClientV2(directory, net)
    registration = messages.NewRegistration.from_data(
        email=acme.email, terms_of_service_agreed=True
    )
    try:
        ca.new_account(registration)
    except errors.ConflictError as exc:  # this key has an account already: use it
        net.account = messages.RegistrationResource(uri=exc.location, body=messages.Registration())
    key_pem = new_key_pem()
    order = ca.new_order(crypto_util.make_csr(key_pem, names))
    for authz in order.authorizations:
        if authz.body.status == messages.STATUS_VALID:
            continue  # validated a moment ago, for another order
        http01 = next(
            (c for c in authz.body.challenges if isinstance(c.chall, challenges.HTTP01)),
            None,
        )
        if http01 is None:
            raise AcmeError(f"the CA offers no HTTP-01 challenge for {authz.body.identifier.value}")
        response, validation = http01.response_and_validation(account_key)
        put_challenge(http01.chall.encode("token"), validation)
        ca.answer_challenge(http01, response)
    deadline = datetime.datetime.now() + datetime.timedelta(seconds=ORDER_TIMEOUT)
    order = ca.poll_and_finalize(order, deadline)
    return order.fullchain_pem.encode(), key_pem
