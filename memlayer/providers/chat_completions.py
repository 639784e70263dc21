"""Replies from any server that speaks OpenAI's Chat Completions API (OpenAI, Ollama, vLLM, llama.cpp, LM Studio)."""

import json
import logging
import time
from contextlib import contextmanager
from typing import Callable, Iterator

import httpx
from httpx_sse import EventSource, SSEError

from memlayer.providers.replies import Reply, estimated_reply
from memlayer.providers.retries import retry_wait
from memlayer.web.errors import ProviderFailed, ProviderTimedOut
from memlayer.web.metrics import PROVIDER_ERRORS, PROVIDER_SECONDS, PROVIDER_TOKENS

logger = logging.getLogger(__name__)

MAX_RETRIES = 2  # after the first attempt, for 429 and 5xx answers only
MAX_RETRY_WAIT_SECONDS = 10.0  # a provider asking for a longer pause gets a 502, not a held thread
CONNECT_TIMEOUT_SECONDS = 5.0
MAX_CONNECTIONS = 200  # per worker process; more than its threads, so no request waits for a socket

TIMED_OUT = "The model provider did not answer in time. Nothing was saved; please retry."


def failed(reason: str, headers: dict | None = None) -> ProviderFailed:
    """The 502 answer: which way the provider failed, never what it said."""
    return ProviderFailed(f"The model provider failed ({reason}). Nothing was saved; please retry.", headers=headers)


class ChatCompletionsResponder:
    """POST {base_url}/chat/completions over one pooled httpx client, with bounded retries."""

    def __init__(self, base_url: str, *, api_key: str | None = None, timeout: float = 60.0,
                 sleep: Callable[[float], None] = time.sleep):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            base_url=base_url.rstrip("/") + "/",
            headers=headers,
            # connect: how long a dead host may stall us; read: the longest silence between two bytes.
            timeout=httpx.Timeout(timeout, connect=min(CONNECT_TIMEOUT_SECONDS, timeout)),
            limits=httpx.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=20),
        )
        self.sleep = sleep  # replaceable, so tests can record the pauses instead of taking them

    def reply(self, model: str, messages: list[dict], *, response_format: dict | None = None) -> Reply:
        """Ask for the whole reply at once (in the shape `response_format` asks for, when given)."""
        payload = {"model": model, "messages": messages, "stream": False}
        purpose = "reply" if response_format is None else "memory"
        if response_format is not None:
            payload["response_format"] = response_format
        started = time.perf_counter()
        with counted_failures(model, purpose):
            response = self._send(payload, stream=False)
            try:
                body = response.json()
            except ValueError:
                raise _malformed("the answer is not JSON") from None
            reply = _completion_reply(body, messages)
        PROVIDER_SECONDS.labels(model, purpose).observe(time.perf_counter() - started)
        count_tokens(model, purpose, reply)
        return reply

    def stream(self, model: str, messages: list[dict]) -> "ChatCompletionsStream":
        """Ask for the reply as Server-Sent Events; the provider has accepted the request when this returns."""
        payload = {"model": model, "messages": messages, "stream": True, "stream_options": {"include_usage": True}}
        started = time.perf_counter()
        with counted_failures(model, "reply"):
            response = self._send(payload, stream=True)
        PROVIDER_SECONDS.labels(model, "reply").observe(time.perf_counter() - started)
        return ChatCompletionsStream(response, messages, model)

    def close(self) -> None:
        """Close the pooled connections."""
        self._client.close()

    def _send(self, payload: dict, *, stream: bool) -> httpx.Response:
        """POST the payload, retrying 429 and 5xx answers; return a successful response (a stream still open)."""
        attempt = 0
        while True:
            request = self._client.build_request("POST", "chat/completions", json=payload)
            try:
                response = self._client.send(request, stream=stream)
            except httpx.TimeoutException as error:
                logger.warning("model provider timed out (%s)", type(error).__name__)
                raise ProviderTimedOut(TIMED_OUT) from None
            except httpx.HTTPError as error:
                logger.warning("model provider unreachable (%s)", type(error).__name__)
                raise failed("could not reach it") from None
            if response.status_code < 400:
                return response
            response.close()
            status = response.status_code
            wait = retry_wait(response, attempt)
            retryable = status == 429 or status >= 500
            if not retryable or attempt == MAX_RETRIES or wait > MAX_RETRY_WAIT_SECONDS:
                logger.warning("model provider answered HTTP %d (attempt %d, giving up)", status, attempt + 1)
                retry_after = response.headers.get("Retry-After") if status == 429 else None
                raise failed(f"HTTP {status}", headers={"Retry-After": retry_after} if retry_after else None)
            logger.warning("model provider answered HTTP %d (attempt %d); retrying in %.2f s", status, attempt + 1, wait)
            self.sleep(wait)
            attempt += 1


class ChatCompletionsStream:
    """The text deltas of a streamed completion; `reply` is set once the provider said it was done."""

    def __init__(self, response: httpx.Response, messages: list[dict], model: str = ""):
        self._response = response
        self._messages = messages
        self._model = model
        self.reply: Reply | None = None

    def __iter__(self) -> Iterator[str]:
        """Yield each delta the provider sends; raise ProviderFailed/ProviderTimedOut when the stream breaks."""
        try:
            with counted_failures(self._model, "reply"):
                if self._response.headers.get("content-type", "").startswith("application/json"):
                    # Some servers ignore "stream": true and answer the whole completion at once.
                    self.reply = _completion_reply(_json(self._response.read()), self._messages)
                    yield self.reply.content
                else:
                    yield from self._deltas()
            count_tokens(self._model, "reply", self.reply)
        except httpx.TimeoutException as error:
            logger.warning("model provider stream timed out (%s)", type(error).__name__)
            raise ProviderTimedOut(TIMED_OUT) from None
        except (httpx.HTTPError, SSEError) as error:
            logger.warning("model provider stream broke off (%s)", type(error).__name__)
            raise failed("the stream broke off") from None
        finally:
            self._response.close()

    def _deltas(self) -> Iterator[str]:
        parts: list[str] = []
        usage, finished = None, False
        for event in EventSource(self._response).iter_sse():
            if event.data.strip() == "[DONE]":
                finished = True
                break
            chunk = _json(event.data)
            if not isinstance(chunk, dict) or "error" in chunk:
                raise _malformed("the stream reported an error" if isinstance(chunk, dict) else "a chunk is not an object")
            usage = _usage(chunk) or usage
            for delta, finish_reason in _chunk_deltas(chunk):
                if delta:
                    parts.append(delta)
                    yield delta
                finished = finished or bool(finish_reason)
        if not finished:
            raise failed("the stream ended before the reply was complete")
        self.reply = _finished_reply("".join(parts), usage, self._messages)

    def close(self) -> None:
        """Stop reading and give the connection back (or drop it, when the reply was not read to the end)."""
        self._response.close()


@contextmanager
def counted_failures(model: str, purpose: str):
    """Count a failed provider call by model, purpose and kind of failure (the error itself goes on)."""
    try:
        yield
    except ProviderTimedOut:
        PROVIDER_ERRORS.labels(model, purpose, "timeout").inc()
        raise
    except ProviderFailed:
        PROVIDER_ERRORS.labels(model, purpose, "failed").inc()
        raise
    except (httpx.HTTPError, SSEError):
        PROVIDER_ERRORS.labels(model, purpose, "broke off").inc()
        raise


def count_tokens(model: str, purpose: str, reply: Reply | None) -> None:
    """Add a finished reply's tokens to the provider's counters."""
    if reply is not None:
        PROVIDER_TOKENS.labels(model, purpose, "prompt").inc(reply.prompt_tokens)
        PROVIDER_TOKENS.labels(model, purpose, "completion").inc(reply.completion_tokens)


def _malformed(what: str) -> ProviderFailed:
    logger.warning("model provider answer malformed: %s", what)
    return failed("malformed answer")


def _json(raw: str | bytes):
    try:
        return json.loads(raw)
    except ValueError:
        raise _malformed("not JSON") from None


def _completion_reply(body, messages: list[dict]) -> Reply:
    """The Reply of a non-streamed completion body."""
    try:
        content = body["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise _malformed("no choices[0].message.content") from None
    if not isinstance(content, str):
        raise _malformed("content is not text")
    return _finished_reply(content, _usage(body), messages)


def _chunk_deltas(chunk: dict) -> Iterator[tuple[str | None, str | None]]:
    """(content delta, finish_reason) of each choice in a stream chunk."""
    choices = chunk.get("choices") or []
    if not isinstance(choices, list):
        raise _malformed("choices is not a list")
    for choice in choices:
        delta = choice.get("delta") if isinstance(choice, dict) else None
        content = delta.get("content") if isinstance(delta, dict) else None
        if content is not None and not isinstance(content, str):
            raise _malformed("delta content is not text")
        yield content, choice.get("finish_reason") if isinstance(choice, dict) else None


def _usage(body) -> tuple[int, int] | None:
    """(prompt_tokens, completion_tokens) when the body reports them as whole numbers."""
    usage = body.get("usage") if isinstance(body, dict) else None
    if not isinstance(usage, dict):
        return None
    counts = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in counts):
        return counts
    return None


def _finished_reply(content: str, usage: tuple[int, int] | None, messages: list[dict]) -> Reply:
    if not content.strip():
        raise _malformed("the reply is empty")
    if usage is None:
        return estimated_reply(messages, content)
    return Reply(content, *usage)
