"""The API's socket: --host/--port resolved the same way by `serve` and `up`, bad ports refused."""

from __future__ import annotations

import argparse

import pytest

from contracts.errors import SemsearchError
from contracts.settings import Settings
from query_api.server import add_listen_arguments, api_url, listen_socket


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_listen_arguments(parser)
    return parser.parse_args(list(argv))


def test_port_zero_binds_a_free_port_and_the_url_names_it() -> None:
    sock = listen_socket(_args("--host", "127.0.0.1", "--port", "0"), Settings())
    try:
        port = sock.getsockname()[1]
        assert port > 0
        assert api_url(sock) == f"http://127.0.0.1:{port}"
    finally:
        sock.close()


def test_the_settings_fill_what_the_command_line_leaves_out() -> None:
    sock = listen_socket(_args(), Settings(api_host="127.0.0.1", api_port=0))
    try:
        assert sock.getsockname()[0] == "127.0.0.1"
    finally:
        sock.close()


@pytest.mark.parametrize("port", ["-1", "65536"])
def test_a_port_outside_tcp_is_refused_by_name(port: str) -> None:
    with pytest.raises(SemsearchError, match=f"--port {port} is not a TCP port"):
        listen_socket(_args("--port", port), Settings())


def test_a_busy_port_says_how_to_choose_another() -> None:
    taken = listen_socket(_args("--host", "127.0.0.1", "--port", "0"), Settings())
    try:
        busy = str(taken.getsockname()[1])
        with pytest.raises(SemsearchError, match="choose another with --port"):
            listen_socket(_args("--host", "127.0.0.1", "--port", busy), Settings())
    finally:
        taken.close()
