"""A real local HTTP server that speaks OpenAI's Chat Completions and embeddings APIs, with scripted failures.

Each request takes the next scripted behaviour (or the default: a reply, or vectors for /embeddings): a
reply (JSON, or SSE chunks when the request asks for a stream), an HTTP error, a hang, a malformed body
or a dropped connection. The server records every request body and notices when a client goes away in
the middle of a stream.
"""

import json
import re
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

USAGE = {"prompt_tokens": 11, "completion_tokens": 7}


class Reply:
    """Answer `text` (split into `pieces` chunks when streaming), after `delay` seconds, `gap` between chunks."""

    def __init__(self, text="Hello from the model.", *, usage=USAGE, delay=0.0, gap=0.0, pieces=None,
                 drop_after=None, done=True):
        self.text, self.usage, self.delay, self.gap = text, usage, delay, gap
        self.pieces = pieces
        self.drop_after = drop_after  # streaming: cut the connection after this many chunks
        self.done = done  # streaming: end with finish_reason and [DONE]

    def __call__(self, handler, body):
        time.sleep(self.delay)
        if body.get("stream"):
            self._stream(handler, body)
            return
        answer = {
            "id": "chatcmpl-fake", "object": "chat.completion", "model": body.get("model"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": self.text}, "finish_reason": "stop"}],
        }
        if self.usage is not None:
            answer["usage"] = {**self.usage, "total_tokens": sum(self.usage.values())}
        handler.send_json(200, answer)

    def chunks(self):
        """The text in pieces: words, or the given list."""
        if self.pieces is not None:
            return list(self.pieces)
        words = self.text.split(" ")
        return [word + ("" if i == len(words) - 1 else " ") for i, word in enumerate(words)]

    def _stream(self, handler, body):
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        try:
            for number, piece in enumerate(self.chunks()):
                if self.drop_after is not None and number == self.drop_after:
                    handler.drop()
                    return
                handler.write_event({"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
                time.sleep(self.gap)
            if self.done:
                handler.write_event({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
                wants_usage = (body.get("stream_options") or {}).get("include_usage")
                if self.usage is not None and wants_usage:
                    handler.write_event({"choices": [], "usage": {**self.usage, "total_tokens": sum(self.usage.values())}})
                handler.write_chunk(b"data: [DONE]\n\n")
            handler.write_chunk(b"")
        except (BrokenPipeError, ConnectionResetError):
            handler.server.provider.disconnects += 1
            handler.close_connection = True


# The fake embedding model's "meanings": words of one concept get near vectors, whatever else they share.
CONCEPTS = (
    ("cat", "cats", "kitten", "pet", "pets", "dog", "dogs", "puppy", "animal", "ada", "rex", "vet"),
    ("sister", "brother", "mother", "father", "family", "lucia", "sibling"),
    ("lisbon", "porto", "city", "moved", "move", "live", "lives", "home", "town"),
    ("piano", "guitar", "music", "instrument", "play", "plays", "song"),
)


def concept_vector(text: str, model: str) -> list[float]:
    """A deterministic vector: one axis per concept (how many of its words the text has), one for the rest.

    Another model name permutes the axes, so vectors of two models do not match each other.
    """
    words = re.findall(r"[a-z]+", text.lower())
    axes = [float(sum(word in concept for word in words)) for concept in CONCEPTS]
    axes.append(0.1 + 0.01 * sum(not any(word in c for c in CONCEPTS) for word in words))
    if model != "fake-embedder":
        axes = axes[1:] + axes[:1]
    return axes


class Embeddings:
    """Answer /embeddings with concept vectors (`dimensions` overrides their length, to break them)."""

    def __init__(self, *, dimensions=None, delay=0.0):
        self.dimensions, self.delay = dimensions, delay

    def __call__(self, handler, body):
        time.sleep(self.delay)
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        vectors = [concept_vector(text, body.get("model", "")) for text in texts]
        if self.dimensions is not None:
            vectors = [(vector * self.dimensions)[:self.dimensions] for vector in vectors]
        handler.send_json(200, {"object": "list", "model": body.get("model"), "data": [
            {"object": "embedding", "index": i, "embedding": vector} for i, vector in enumerate(vectors)]})


class Status:
    """Answer an HTTP error with a JSON body that must never reach our clients."""

    def __init__(self, code, retry_after=None):
        self.code, self.retry_after = code, retry_after

    def __call__(self, handler, body):
        headers = {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}
        handler.send_json(self.code, {"error": {"message": "PROVIDER-SECRET-DETAIL"}}, headers)


class Hang:
    """Say nothing for `seconds`, then close."""

    def __init__(self, seconds):
        self.seconds = seconds

    def __call__(self, handler, body):
        time.sleep(self.seconds)
        handler.drop()


class Malformed:
    """Answer 200 with a body that is not a completion (`raw` bytes, JSON by default)."""

    def __init__(self, raw=b"{not json", content_type="application/json"):
        self.raw, self.content_type = raw, content_type

    def __call__(self, handler, body):
        handler.send_response(200)
        handler.send_header("Content-Type", self.content_type)
        handler.send_header("Content-Length", str(len(self.raw)))
        handler.end_headers()
        handler.wfile.write(self.raw)


class Drop:
    """Cut the connection after reading the request, without answering."""

    def __call__(self, handler, body):
        handler.drop()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        pass

    def do_POST(self):
        provider = self.server.provider
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.loads(raw)
        behaviour = provider.arrive(self.path, dict(self.headers), body)
        try:
            behaviour(self, body)
        finally:
            provider.leave()

    def send_json(self, code, payload, headers=None):
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def write_chunk(self, data: bytes):
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def write_event(self, payload):
        self.write_chunk(f"data: {json.dumps(payload)}\n\n".encode())

    def drop(self):
        self.close_connection = True
        self.connection.shutdown(2)


class FakeProvider:
    """The server: `url` for MEMLAYER_LLM_BASE_URL, `script(...)` to queue behaviours, `requests` to inspect."""

    def __init__(self):
        self.default = Reply()
        self.embeddings = Embeddings()  # the default answer of /embeddings
        self._script: deque = deque()
        self.requests: list[dict] = []
        self.disconnects = 0
        self.in_flight = 0
        self.peak_in_flight = 0
        self._lock = threading.Lock()
        self._gate: threading.Barrier | None = None
        self._open = threading.Event()
        self._open.set()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.provider = self
        # A short poll interval: stop() waits for one, and every test that uses the server stops it.
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        """The base URL, as MEMLAYER_LLM_BASE_URL takes it."""
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def start(self) -> "FakeProvider":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def script(self, *behaviours) -> None:
        """Use these behaviours for the next requests, in order."""
        self._script.extend(behaviours)

    def gather(self, count: int | None, timeout: float = 10.0) -> None:
        """Hold each request until `count` requests are in flight at once (proves they overlap); None stops it."""
        self._gate = threading.Barrier(count, timeout=timeout) if count else None

    def pause(self) -> None:
        """Hold every request that arrives from now on until resume()."""
        self._open.clear()

    def resume(self) -> None:
        """Let held requests go on."""
        self._open.set()

    def arrive(self, path, headers, body):
        with self._lock:
            self.requests.append({"path": path, "headers": headers, "body": body})
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            default = self.embeddings if path.rstrip("/").endswith("/embeddings") else self.default
            behaviour = self._script.popleft() if self._script else default
        if self._gate is not None:
            self._gate.wait()
        self._open.wait(timeout=30)
        return behaviour

    def leave(self):
        with self._lock:
            self.in_flight -= 1

    def wait_for(self, condition, timeout: float = 5.0) -> bool:
        """Poll `condition()` until it is true or the timeout passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return True
            time.sleep(0.02)
        return condition()
