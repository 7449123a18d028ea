"""What a document, an event or a query may hold: values that can be tokenized and stored.

Python's json accepts what UTF-8 files, the tokenizer and strict JSON readers cannot take: lone
surrogate escapes ("\\ud800") and NaN/Infinity (also "1e400", which parses as inf). A value
carrying one would pass decoding and fail later - in the tokenizer (the whole batch) or in every
snapshot (nothing durable ever again) - so it is refused at the boundary, once, with a reason.
The decoder, the producer side, `Index.validate_document` and query checks share this module;
it imports nothing of ours.
"""

from __future__ import annotations

import math

# Levels of objects/arrays allowed inside one field (metadata is level 1). Deeper values are
# refused with a reason instead of reaching a recursive serializer that may blow the stack.
MAX_NESTING = 32


def unstorable(value: object, where: str) -> str | None:
    """Why `value` (a decoded JSON value) cannot be indexed and stored, or None if it can.

    `where` names the value in the reason ("'metadata'"); nested parts are named by path
    ("'metadata.a[2]'"). Shared by the decoder, the producer side and `Index.validate_document`.
    """
    return _unstorable(value, where, 1)


def _unstorable(value: object, where: str, depth: int) -> str | None:
    if isinstance(value, str):
        return _string_problem(value, where)
    if value is None or isinstance(value, bool | int):
        return None
    if isinstance(value, float):
        if math.isfinite(value):
            return None
        return (
            f"{where} is {value!r}; JSON has no NaN or Infinity (and numbers beyond ~1e308 parse as "
            "infinity) - send a finite number, or null"
        )
    if isinstance(value, dict | list | tuple) and depth > MAX_NESTING:
        return f"{where} nests deeper than {MAX_NESTING} levels of objects/arrays; flatten it"
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{where} has a key {key!r} that is not a string; JSON object keys are strings"
            problem = _string_problem(key, f"a key of {where}") or _unstorable(
                item, f"{where[:-1]}.{key}'" if where.endswith("'") else f"{where}.{key}", depth + 1
            )
            if problem:
                return problem
        return None
    if isinstance(value, list | tuple):
        for position, item in enumerate(value):
            problem = _unstorable(
                item, f"{where[:-1]}[{position}]'" if where.endswith("'") else f"{where}[{position}]", depth + 1
            )
            if problem:
                return problem
        return None
    return (
        f"{where} is a {type(value).__name__}, which JSON cannot hold; use strings, numbers, "
        "booleans, null, arrays and objects"
    )


def _string_problem(text: str, where: str) -> str | None:
    if text.isascii():  # the common case costs one C scan
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return (
            f"{where} contains a lone surrogate U+{ord(text[exc.start]):04X} at character {exc.start}; "
            "JSON escapes \\ud800-\\udfff are only valid as a high+low pair. Fix how the producer "
            "builds its strings (decode its input as UTF-8, do not split surrogate pairs) and republish"
        )
    return None
