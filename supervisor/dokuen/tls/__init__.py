"""tls: HTTPS for every app. certificates.py checks PEM pairs and decides renewals (pure),
keystore.py keeps keys and certificates (root-only), acmeclient.py talks RFC 8555 through
certbot's ``acme`` library, renewal.py obtains and renews them in the background, and
requests.py answers the ``certs*`` requests.

May import: the core, supervise (the unified log), proxy (what nginx serves), apps and
backup (the target certificates are kept in).
"""

__all__ = ["acmeclient", "backups", "certificates", "keystore", "renewal", "requests"]
DEPENDS_ON: tuple[str, ...] = ("apps", "backup", "proxy", "supervise")
