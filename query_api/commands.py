"""`semsearch serve`: the HTTP API alone, against REDIS_URL and SEMSEARCH_DATA_DIR."""

from __future__ import annotations

import argparse
import socket
import sys
from typing import Any

from indexer.errors import SemsearchError
from semsearch.settings import Settings


def register(subparsers: Any) -> None:
    serve = subparsers.add_parser(
        "serve",
        help="run the search API (serves the index named by the Redis pointer)",
        description=(
            "Serve the index that the Redis pointer (SEMSEARCH_POINTER_KEY) names, from "
            "SEMSEARCH_DATA_DIR/indexes/. Without REDIS_URL the embedded Redis of the data dir "
            "is reused if running (e.g. by `semsearch up`) or started."
        ),
    )
    serve.add_argument("--host", help="listen address (default $SEMSEARCH_API_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port, 0 = any free (default $SEMSEARCH_API_PORT or 8000)")
    serve.set_defaults(func=run_serve)


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind before starting uvicorn, so the real port (for --port 0) is known and a busy port
    fails with a message instead of a traceback."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on sockets that say they are TCP,
    # and without it every keep-alive response waits ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SemsearchError(
            f"cannot listen on {host}:{port} ({exc.strerror}); choose another with --port or "
            "SEMSEARCH_API_PORT"
        ) from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def api_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def make_server(app: Any, *, log_level: str = "info") -> Any:
    """A uvicorn server for `app`; run it with `server.run(sockets=[sock])`.

    Ctrl-C / SIGTERM shut it down gracefully and `run()` then *returns*: stock uvicorn re-raises
    the signal afterwards, which would kill the process before our own cleanup (stopping the
    embedded Redis, the indexer thread) could run.
    """
    import uvicorn

    class GracefulServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            super().handle_exit(sig, frame)
            captured = getattr(self, "_captured_signals", None)
            if isinstance(captured, list):
                captured.clear()

    config = uvicorn.Config(
        app, log_level=log_level, access_log=False, lifespan="on", timeout_graceful_shutdown=10
    )
    return GracefulServer(config)


def run_serve(args: argparse.Namespace) -> int:
    from query_api.app import create_app
    from semsearch.embedded.redis import describe_url, resolve_redis

    settings = Settings.from_env()
    host = args.host or settings.api_host
    port = settings.api_port if args.port is None else args.port
    if not 0 <= port <= 65535:
        raise SemsearchError(f"--port {port} is not a TCP port (0-65535)")
    sock = bind_socket(host, port)
    redis_url, embedded = resolve_redis(settings)
    try:
        settings = settings.with_overrides(redis_url=redis_url)
        app = create_app(settings)
        url = api_url(sock)
        print(f"semsearch API on {url} (docs {url}/docs), data {settings.data_dir.resolve()}", file=sys.stderr)
        print(f"pointer {settings.pointer_key} in Redis {describe_url(redis_url)}", file=sys.stderr)
        make_server(app).run(sockets=[sock])
    finally:
        sock.close()
        if embedded is not None:
            embedded.stop()
    return 0
