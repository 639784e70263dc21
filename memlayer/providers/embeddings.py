"""Embeddings from any server that speaks OpenAI's embeddings API (OpenAI, Ollama, vLLM, llama.cpp, TEI)."""

import logging
import math
import time
from typing import Callable

import httpx

from memlayer.providers.retries import retry_wait

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 5.0
MAX_CONNECTIONS = 200  # per worker process, as for the chat client: no request waits for a socket
MAX_DIMENSIONS = 16_000  # pgvector's limit for a stored vector
MAX_RETRY_WAIT_SECONDS = 10.0


class EmbeddingFailed(Exception):
    """The embeddings server could not give a usable vector; the message says how, never the text or key."""


class EmbeddingsClient:
    """POST {base_url}/embeddings over one pooled httpx client; every answer is checked before it is used."""

    def __init__(self, base_url: str, *, model: str, api_key: str | None = None, timeout: float = 2.0,
                 retries: int = 0, sleep: Callable[[float], None] = time.sleep):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.model = model
        self.retries = retries  # for 429 and 5xx answers: none on a send, a few for backfills
        self.sleep = sleep
        self._client = httpx.Client(
            base_url=base_url.rstrip("/") + "/",
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(CONNECT_TIMEOUT_SECONDS, timeout)),
            limits=httpx.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=20),
        )

    def embed(self, texts: list[str]) -> list[list[float]]:
        """One vector per text, in order, all of one dimension; EmbeddingFailed when that cannot be had."""
        if not texts:
            return []
        attempt = 0
        while True:
            try:
                response = self._client.post("embeddings", json={"model": self.model, "input": texts})
            except httpx.TimeoutException:
                raise EmbeddingFailed("timed out") from None
            except httpx.HTTPError as error:
                raise EmbeddingFailed(f"unreachable ({type(error).__name__})") from None
            status = response.status_code
            if status < 400:
                return vectors_of(response, len(texts))
            wait = retry_wait(response, attempt)
            if (status == 429 or status >= 500) and attempt < self.retries and wait <= MAX_RETRY_WAIT_SECONDS:
                logger.warning("embeddings server answered HTTP %d (attempt %d); retrying in %.2f s",
                               status, attempt + 1, wait)
                self.sleep(wait)
                attempt += 1
                continue
            raise EmbeddingFailed(f"HTTP {status}")

    def embed_one(self, text: str) -> list[float] | None:
        """The text's vector, or None (logged without the text) when the server fails: callers go on without it."""
        try:
            return self.embed([text])[0]
        except EmbeddingFailed as error:
            logger.warning("embedding skipped: the embeddings server failed (%s)", error)
            return None

    def close(self) -> None:
        """Close the pooled connections."""
        self._client.close()


def vectors_of(response: httpx.Response, count: int) -> list[list[float]]:
    """The vectors of an embeddings answer, checked: `count` of them, in input order, finite, one dimension."""
    try:
        body = response.json()
        items = sorted(body["data"], key=lambda item: item.get("index", 0))
        vectors = [item["embedding"] for item in items]
    except (ValueError, KeyError, TypeError, AttributeError):
        raise EmbeddingFailed("malformed answer") from None
    if len(vectors) != count:
        raise EmbeddingFailed(f"{len(vectors)} vectors for {count} texts")
    dimensions = {len(vector) if isinstance(vector, list) else -1 for vector in vectors}
    if len(dimensions) != 1 or not 0 < next(iter(dimensions)) <= MAX_DIMENSIONS:
        raise EmbeddingFailed("vectors of no usable dimension")
    for vector in vectors:
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in vector):
            raise EmbeddingFailed("a vector holds something other than finite numbers")
        if not any(vector):
            raise EmbeddingFailed("a zero vector (it has no direction to compare)")
    return [[float(x) for x in vector] for vector in vectors]
