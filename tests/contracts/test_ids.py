"""One index-id check for paths, requests and the pointer; a bad id is an IndexNotFoundError too."""

from __future__ import annotations

import pytest

from contracts.errors import IndexNotFoundError, InvalidIndexIdError
from contracts.ids import validate_index_id
from contracts.offsets import copy_offsets


@pytest.mark.parametrize(
    "bad",
    ["../x", "/etc/passwd", "a/b", "..", "a..b", "UPPER", "", " idx", "idx\n", "x" * 129, None, 7],
)
def test_what_is_not_an_index_id_is_refused(bad: object) -> None:
    with pytest.raises(InvalidIndexIdError, match="is not an index id") as caught:
        validate_index_id(bad)
    assert isinstance(caught.value, IndexNotFoundError)


def test_index_ids_pass_unchanged() -> None:
    for good in ("all-minilm-l6-v2-1a2b3c4d5e6f", "e5.small_v2", "x" * 128, "0"):
        assert validate_index_id(good) == good


def test_copied_offsets_do_not_share_partitions() -> None:
    offsets = {"docs": {0: 3, 1: 5}}
    copy = copy_offsets(offsets)
    copy["docs"][0] = 99
    assert offsets == {"docs": {0: 3, 1: 5}}
