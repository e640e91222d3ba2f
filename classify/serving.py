"""What platekit's Gradio servers (demo.py, `curate review`) let a client reach beyond Gradio's own checks: the login
page without the API schema, request bodies capped, uploads refused where the UI has none, files served by suffix."""
from __future__ import annotations

import errno
import re
import socket

from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse

# Gradio 6 renders the login page from the same template as the app and embeds every endpoint's schema in it
# (routes.py `main`: get_api_info is called whether or not the user is logged in); dropdown choices are in there.
# `null` makes the page fetch /info itself once logged in, which Gradio's login_check guards.
_LOGIN_CONFIG = re.compile(rb'window\.gradio_config = \{"auth_required":true[,}]')
_API_INFO = re.compile(rb"window\.gradio_api_info = .*?;</script>", re.S)  # toorjson escapes "<": no early match
_NO_API_INFO = b"window.gradio_api_info = null;</script>"
DRAIN_LIMIT_BYTES = 64 * 1024 * 1024  # a refused body up to this size is read and dropped; a bigger one is cut off
_BODY_METHODS = {"POST", "PUT", "PATCH"}
_FILE_ROUTES = ("/gradio_api/file=", "/gradio_api/file/")


class Guard:
    """ASGI middleware in front of a Gradio app (passed to launch as app_kwargs={"middleware": guard(...)})."""

    def __init__(self, app, max_body_bytes: int, uploads: bool = True, file_suffixes: tuple[str, ...] | None = None):
        self.app, self.max_body_bytes, self.uploads = app, max_body_bytes, uploads
        self.file_suffixes = None if file_suffixes is None else tuple(s.lower() for s in file_suffixes)

    def refusal(self, scope) -> PlainTextResponse | None:
        """The answer to a request that must not reach Gradio, or None."""
        headers = {key.lower(): value for key, value in scope.get("headers", [])}
        if scope["method"] in _BODY_METHODS:
            login = scope.get("path", "").rstrip("/").endswith("/login")  # Gradio's login form is multipart too
            if not self.uploads and not login and headers.get(b"content-type", b"").lower().startswith(b"multipart/"):
                return PlainTextResponse("this server takes no uploads", status_code=403)
            length = headers.get(b"content-length")
            if length is None and headers.get(b"transfer-encoding"):
                return PlainTextResponse("send a Content-Length", status_code=411)
            if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
                return PlainTextResponse(f"request body over {self.max_body_bytes} bytes", status_code=413)
        path = scope.get("path", "")
        if self.file_suffixes is not None and path.startswith(_FILE_ROUTES) and not path.lower().endswith(
                self.file_suffixes):
            return PlainTextResponse("not a file this app shows", status_code=403)
        return None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        refusal = self.refusal(scope)
        if refusal is not None:
            await _drain(scope, receive)
            return await refusal(scope, receive, send)
        await self.app(scope, receive, _login_page_without_api_info(send) if scope["method"] == "GET" else send)


async def _drain(scope, receive) -> None:
    """Read and drop a refused request's body (when it is not huge), so the client, still sending, hears the
    refusal instead of a broken pipe."""
    length = dict(scope.get("headers", [])).get(b"content-length", b"")
    if scope["method"] not in _BODY_METHODS or not length.isdigit() or int(length) > DRAIN_LIMIT_BYTES:
        return
    while (await receive()).get("more_body"):
        pass


def _login_page_without_api_info(send):
    """Wrap `send`: an HTML response is held until complete; a login page loses its embedded API schema."""
    held: list[dict] = []

    async def wrapped(message):
        if message["type"] == "http.response.start":
            content_type = dict(message.get("headers", [])).get(b"content-type", b"")
            if not content_type.startswith(b"text/html"):
                return await send(message)
            held.append(message)
            return None
        if not held:
            return await send(message)
        held.append(message)
        if message.get("more_body"):
            return None
        start, *parts = held
        body = b"".join(part.get("body", b"") for part in parts)
        if _LOGIN_CONFIG.search(body):
            body = _API_INFO.sub(lambda _: _NO_API_INFO, body, count=1)
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    return wrapped


def guard(max_body_bytes: int, uploads: bool = True, file_suffixes: tuple[str, ...] | None = None) -> list[Middleware]:
    """The middleware list for gr.Blocks.launch(app_kwargs={"middleware": ...})."""
    return [Middleware(Guard, max_body_bytes=max_body_bytes, uploads=uploads, file_suffixes=file_suffixes)]


def why_unservable(host: str, port: int) -> str | None:
    """Why a server cannot listen on host:port, in words, or None if it can: checked before launch() (Gradio says
    "Cannot find empty port" for a taken port and an unknown host alike, after uvicorn has logged its own error)."""
    try:
        family, kind, _, _, address = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: a just-closed port is free
            probe.bind(address)
    except socket.gaierror:
        return f"{host} is not a host name or address this machine knows (--host)"
    except OSError as error:
        reasons = {errno.EADDRINUSE: f"port {port} is in use (pick another with --port)",
                   errno.EADDRNOTAVAIL: f"{host} is not an address of this machine (--host)",
                   errno.EACCES: f"port {port} needs administrator rights (pick one above 1023 with --port)"}
        return reasons.get(error.errno, error.strerror or str(error))
    return None
