"""How long to wait before asking a model server again after a 429 or 5xx answer."""

import random
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

import httpx

BACKOFF_SECONDS = 0.5  # doubled per retry, with jitter, when the server gives no Retry-After


def retry_wait(response: httpx.Response, attempt: int) -> float:
    """Seconds to wait before the next attempt: the server's Retry-After when it gives one, else jittered backoff."""
    header = response.headers.get("Retry-After")
    if header:
        try:
            return max(0.0, float(header))
        except ValueError:
            pass
        try:
            return max(0.0, (parsedate_to_datetime(header) - datetime.now(timezone.utc)).total_seconds())
        except (TypeError, ValueError):
            pass
    return BACKOFF_SECONDS * (2 ** attempt) * random.uniform(0.5, 1.5)
