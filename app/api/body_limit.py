"""Request bodies are capped before they are read, whoever sends them (SPEC 7.4, 8.1).

``PUT /api/scores`` may take up to SCORES_MAX_BODY_BYTES, every other route MAX_BODY_BYTES.
Authentication runs after routing; without a cap in front of it, any client could make a worker
read a body of any size. A plain ASGI middleware in front of everything (Starlette's
BaseHTTPMiddleware would add a task group and memory streams to every request):

* a declared ``Content-Length`` above the route's cap is answered 413 at once: the app is not
  called and not a byte of the body is read, whatever the credentials;
* a body without one (chunked) is counted as it streams in; the chunk that crosses the cap is
  the last one read: the 413 goes out then, and the app's reading ends there;
* every 413 closes the connection (``Connection: close``), so the server does not go on
  reading the rest of the body to find the next request; so does any answer given before the
  app read the request's body to the end (a 401 or 403, or a route that takes no body).

The second check, the credentials before any of the body is read, is the routes' own
(``app.api.routing``).
"""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class _BodyTooLarge(HTTPException):
    """Raised into the app by ``receive`` once the 413 is sent: an HTTPException, so FastAPI
    passes it on as is instead of calling it a malformed body."""

    def __init__(self) -> None:
        super().__init__(status_code=413)


def _too_large_body(limit: int) -> bytes:
    return json.dumps(
        {
            "error": "ContentTooLarge",
            "detail": f"the request body is larger than the {limit}-byte limit",
        }
    ).encode()


# The one route whose valid bodies outgrow the default cap: PUT /api/scores takes up to 10,000
# rows (SPEC 7.1); its cap is SCORES_MAX_BODY_BYTES.
SCORES_ROUTE = ("PUT", "/api/scores")


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int, scores_max_body_bytes: int) -> None:
        self.app = app
        self.default_limit = max_body_bytes
        self.scores_limit = scores_max_body_bytes

    def limit_for(self, scope: Scope) -> int:
        if (scope["method"], scope["path"]) == SCORES_ROUTE:
            return self.scores_limit
        return self.default_limit

    @staticmethod
    async def _reject(send: Send, limit: int) -> None:
        body = _too_large_body(limit)
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared: int | None = None
        has_body = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = None
                has_body = has_body or declared != 0
            elif name == b"transfer-encoding":
                has_body = True
        limit = self.limit_for(scope)
        if declared is not None and declared > limit:
            await self._reject(send, limit)
            return

        received = 0
        finished = not has_body  # the app has read the request's body to the end
        rejected = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, finished, rejected
            if rejected:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    rejected = True
                    if not started:
                        await self._reject(send, limit)
                    raise _BodyTooLarge()
                if not message.get("more_body", False):
                    finished = True
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if rejected:
                return  # the 413 is the answer; whatever the app says after it is dropped
            if message["type"] == "http.response.start":
                started = True
                if not finished:
                    message = {
                        **message,
                        "headers": [*message.get("headers", []), (b"connection", b"close")],
                    }
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:  # _BodyTooLarge among them
            if not rejected:
                raise
            # The app failed on the body it could not finish reading; the 413 has been sent.
