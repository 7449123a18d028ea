"""Index ids: the one name an index has on disk, in manifests and in the Redis pointer.

An id is a directory name under the data root, never a path: whoever can write a request, a
CLI flag or the pointer still cannot make a process open files elsewhere. Hence one check,
used by everything that turns an id into a location.
"""

from __future__ import annotations

import re

from contracts.errors import InvalidIndexIdError

INDEX_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")


def validate_index_id(value: object) -> str:
    """Return `value` if it is a well-formed index id; raise InvalidIndexIdError otherwise."""
    if not isinstance(value, str) or not INDEX_ID_PATTERN.fullmatch(value) or ".." in value:
        raise InvalidIndexIdError(
            f"{value!r} is not an index id (lowercase letters, digits, '.', '_', '-'; at most 128 "
            "characters; never a path); point at an id listed under $SEMSEARCH_DATA_DIR/indexes/"
        )
    return value
