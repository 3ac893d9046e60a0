"""One TLS context for every httpx client the bot makes: each client would otherwise load the
certificate authorities again, about 0.8 MiB of memory apiece."""

from __future__ import annotations

import functools
import ssl


@functools.cache
def tls_context() -> ssl.SSLContext:
    """httpx's own default (certifi's authorities, SSL_CERT_FILE honoured), made once."""
    import httpx  # only the clients that need it load it

    return httpx.create_ssl_context()
