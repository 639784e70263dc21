"""Server-Sent Events for POST /chats/{id}/messages with `Accept: text/event-stream`.

Events: `delta` {"content"} per piece of the reply, then `message` (the stored assistant Message) once the
pair is committed, or `error` {"detail", "status"} when anything fails, in which case nothing was written.
"""

import json

from flask import Response, current_app, request, stream_with_context

from memlayer.assistant.conversation import Turn, store_exchange, store_transaction
from memlayer.providers.replies import ReplyStream
from memlayer.storage.db import get_pool, retrying
from memlayer.web import idempotency

EVENT_STREAM = "text/event-stream"


def wants_event_stream() -> bool:
    """Whether the client asked for SSE rather than JSON (curl's default */* gets JSON)."""
    return request.accept_mimetypes.best_match(["application/json", EVENT_STREAM]) == EVENT_STREAM


def sse(event: str, data: dict) -> str:
    """One Server-Sent Event (JSON data on a single line)."""
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def event_stream(turn: Turn, stream: ReplyStream, dump_message, claim: idempotency.Claim | None = None) -> Response:
    """Relay the reply's pieces as they come, then store the pair and send it; a failure ends with an error event.

    A client that disconnects makes the next write fail: the server closes this generator at its
    current `yield`, before anything is stored, and `finally` drops the provider's stream. Under an
    Idempotency-Key the stored Message is recorded as the JSON 201 a retry gets; a failure gives the key back.
    """

    def events():
        stored = False
        try:
            for piece in stream:
                yield sse("delta", {"content": piece})
            for attempt in retrying():
                with attempt, get_pool().connection() as conn, \
                        store_transaction(conn, turn, records_answer=claim is not None):
                    message = dump_message(store_exchange(conn, turn, stream.reply))
                    idempotency.respond(conn, claim, message, 201)  # what a retry with the key is answered
            stored = True
            yield sse("message", message)
        except Exception as error:  # the status line is sent already: every failure becomes an event
            answer = current_app.handle_user_exception(error)
            yield sse("error", {"detail": answer.get_json()["detail"], "status": answer.status_code})
        finally:
            stream.close()
            if not stored:
                idempotency.release(claim)

    return Response(
        stream_with_context(events()),
        status=200,
        mimetype=EVENT_STREAM,
        # X-Accel-Buffering: nginx must pass each event on at once (Cache-Control: no-store comes from headers.py).
        headers={"X-Accel-Buffering": "no"},
    )
