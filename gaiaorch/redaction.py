"""What of a webhook URL may be shown anywhere: its scheme, host and port.

The path and query of a Slack-style hook are its secret (whoever knows them can post to the
channel), and user:password may sit before the host. Names, metrics labels, events, stored rows
and log lines carry only the URL's origin. In the base layer, so the configuration's parser
(which picks an unnamed webhook's name) and the notifications app share these functions.
"""

from __future__ import annotations

import hashlib
from urllib.parse import urlsplit

NAME_DIGEST_CHARS = 8


def public_origin(url: str) -> str:
    """`https://hooks.slack.com`, `http://10.0.0.5:8080`: scheme, host and port, nothing else."""
    parts = urlsplit(url)
    host_and_port = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host_and_port}".lower()


def public_webhook_name(url: str) -> str:
    """The name of a webhook configured without one: its origin plus a short, stable digest of
    the whole URL, so two hooks on one host keep distinct names without showing their paths."""
    digest = hashlib.sha256(url.encode()).hexdigest()[:NAME_DIGEST_CHARS]
    return f"{public_origin(url)} {digest}"


def without_url(text: str, url: str) -> str:
    """`text` with every occurrence of the URL replaced by its origin."""
    return text.replace(url, public_origin(url)) if url else text
