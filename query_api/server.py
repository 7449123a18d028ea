"""The API's HTTP server: a socket bound before uvicorn starts, and a uvicorn that returns on a signal.

Shared by `semsearch serve` and `semsearch up`, which both own a process whose cleanup (an
embedded Redis, the indexer thread) must run after the server stops.
"""

from __future__ import annotations

import argparse
import socket
from typing import Any

from contracts.errors import SemsearchError
from contracts.settings import Settings


def add_listen_arguments(parser: argparse.ArgumentParser) -> None:
    """--host / --port of the API, for every command that runs one (serve, up)."""
    parser.add_argument("--host", help="API listen address (default $SEMSEARCH_API_HOST or 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, help="API port, 0 = any free (default $SEMSEARCH_API_PORT or 8000)"
    )


def listen_socket(args: argparse.Namespace, settings: Settings) -> socket.socket:
    """The API's bound socket from --host / --port, the settings where they are not given."""
    host = args.host or settings.api_host
    port = settings.api_port if args.port is None else args.port
    if not 0 <= port <= 65535:
        raise SemsearchError(f"--port {port} is not a TCP port (0-65535)")
    return bind_socket(host, port)


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
