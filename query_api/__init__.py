"""The thin HTTP lookup API that serves whichever index the Redis pointer names."""

from typing import TYPE_CHECKING

# mypy and IDEs read the real imports; the interpreter imports a name's module on first use.
if TYPE_CHECKING:
    from query_api.app import create_app
    from query_api.client import search_via_api
    from query_api.holder import IndexHolder
    from query_api.loader import IndexLoader
    from query_api.refresher import Refresher
    from query_api.server import api_url, bind_socket, make_server
    from query_api.serving import Serving
    from query_api.watcher import PointerWatcher
else:
    from contracts._exports import lazy_exports

    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "query_api.app": ("create_app",),
            "query_api.client": ("search_via_api",),
            "query_api.holder": ("IndexHolder",),
            "query_api.loader": ("IndexLoader",),
            "query_api.refresher": ("Refresher",),
            "query_api.server": ("api_url", "bind_socket", "make_server"),
            "query_api.serving": ("Serving",),
            "query_api.watcher": ("PointerWatcher",),
        },
    )

__all__ = [
    "IndexHolder",
    "IndexLoader",
    "PointerWatcher",
    "Refresher",
    "Serving",
    "api_url",
    "bind_socket",
    "create_app",
    "make_server",
    "search_via_api",
]
