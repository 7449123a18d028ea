"""`semsearch serve`: the HTTP API alone, against REDIS_URL and SEMSEARCH_DATA_DIR.

On the top floor because without REDIS_URL it reuses or starts the data dir's embedded Redis.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from contracts.pointer import describe_url
from contracts.settings import Settings
from query_api.server import add_listen_arguments, api_url, listen_socket, make_server


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
    add_listen_arguments(serve)
    serve.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    from query_api.app import create_app
    from semsearch.embedded.redis import resolve_redis

    settings = Settings.from_env()
    sock = listen_socket(args, settings)
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
