"""`semsearch serve`: the HTTP API alone, against REDIS_URL and SEMSEARCH_DATA_DIR.

On the top floor because without REDIS_URL it reuses or starts the data dir's embedded Redis.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from contracts.errors import SemsearchError
from contracts.pointer import describe_url
from contracts.settings import Settings
from query_api.server import api_url, bind_socket, make_server


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


def run_serve(args: argparse.Namespace) -> int:
    from query_api.app import create_app
    from semsearch.embedded.redis import resolve_redis

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
