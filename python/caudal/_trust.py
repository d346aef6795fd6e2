"""What the Redis cache tier and the checkpoint stores share to decide which
bytes may be decoded: the type-exact JSON check and secret handling.

Only trusted bytes run: a pickle read back from Redis or a database is
loaded only when an HMAC-SHA256 tag made with the user's secret verifies
(or, for checkpoints, when the store is the process's own file). Values JSON
carries exactly need no pickle at all.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from typing import Any

from caudal.errors import ConfigurationError

#: Shortest secret accepted (bytes).
MIN_SECRET = 16
JSON_MAX_DEPTH = 100
# What json.dumps(v, ensure_ascii=False, separators=(",", ":")) builds on
# every call, built once (a checkpoint encodes one payload per step).
_JSON_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def json_exact(value: Any, depth: int = 0) -> bool:
    """Whether JSON carries ``value`` exactly: ``json.loads(json.dumps(v))``
    has the same types all the way down (no tuple -> list, int subclass ->
    int, non-str dict key -> str, ...). Deeper than JSON_MAX_DEPTH (or
    cyclic): no."""
    t = type(value)
    if t is str or t is int or t is float or t is bool or value is None:
        return True
    if depth >= JSON_MAX_DEPTH:
        return False
    if t is list:
        for item in value:
            if not json_exact(item, depth + 1):
                return False
        return True
    if t is dict:
        for k, item in value.items():
            if type(k) is not str or not json_exact(item, depth + 1):
                return False
        return True
    return False


def json_bytes(value: Any) -> bytes | None:
    """``value`` as compact UTF-8 JSON if JSON carries it exactly, else None."""
    if not json_exact(value):
        return None
    try:
        # UTF-8 fails on lone surrogates (an escaped pair would load as one
        # character); dumps fails on ints past Python's digit limit: neither
        # round-trips, so neither is JSON here.
        return _JSON_ENCODER.encode(value).encode()
    except ValueError:
        return None


def secret_bytes(secret: bytes | str | None, env: str, owner: str) -> bytes | None:
    """``secret`` as bytes, or ``$env`` when it is None (None if unset or
    empty). TypeError for another type; ConfigurationError (naming ``owner``
    and where the secret came from) when shorter than MIN_SECRET bytes."""
    from_env = secret is None
    if from_env:
        secret = os.environ.get(env) or None
        if secret is None:
            return None
    if isinstance(secret, str):
        secret = secret.encode()
    if not isinstance(secret, bytes | bytearray):
        raise TypeError(f"secret must be bytes or str, got {type(secret).__name__}")
    if len(secret) < MIN_SECRET:
        where = f"${env}" if from_env else "secret"
        raise ConfigurationError(
            f"{owner}: {where} must be at least {MIN_SECRET} bytes, got {len(secret)}"
        )
    return bytes(secret)


def hmac_tag(secret: bytes, context: bytes, *parts: bytes | memoryview) -> bytes:
    """HMAC-SHA256 with ``secret`` over ``context`` then each part."""
    mac = hmac.new(secret, context, hashlib.sha256)
    for part in parts:
        mac.update(part)
    return mac.digest()


def tags_equal(a: bytes, b: bytes | memoryview) -> bool:
    return hmac.compare_digest(a, bytes(b))
