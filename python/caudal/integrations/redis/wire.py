"""The value format of the Redis cache tier (version 2), and its trust rules.

::

    byte 0      0x02  format version
    byte 1      codec: 0x4A type-exact JSON, 0x50 pickle (authenticated
                entries only), 0x53 the tier's own serializer
    byte 2      0x00 no tag, or 0x01: a 32-byte HMAC-SHA256 tag follows,
                over the value key, bytes 0..2 and the frame
    then        a ``caudal._core.compress`` frame: 0xC0 raw, 0xC1 zstd

With compression off the raw frame is built directly (no call into C++);
with it on, values longer than ``compression_threshold`` are compressed when
that makes them smaller. A reader accepts both frames whatever its own
setting. Anything that does not parse is a corrupt entry (``_CorruptEntry``);
one that is not authenticated an unauthenticated one (``_Unauthenticated``).

Trust: with a secret every entry is tagged and verified before it is
decoded; values that JSON carries exactly are JSON, the others pickles.
Without a secret nothing is pickled or unpickled: only JSON-exact values are
shared. A custom serializer is used for every value (authenticated with a
secret).
"""

from __future__ import annotations

import json
import pickle
from typing import Any, Protocol

from caudal import _core
from caudal._trust import hmac_tag, json_bytes, tags_equal

FORMAT_VERSION = 0x02
_FRAME_RAW = 0xC0
_FRAME_ZSTD = 0xC1
_CODEC_JSON = 0x4A  # "J": type-exact JSON (None, bool, int, float, str, list, str-keyed dict)
_CODEC_PICKLE = 0x50  # "P": pickle protocol 5, only ever read from an authenticated entry
_CODEC_CUSTOM = 0x53  # "S": the tier's own serializer (serializer=)
_AUTH_NONE = 0x00
_AUTH_HMAC = 0x01  # HMAC-SHA256 tag of 32 bytes follows
_TAG_LEN = 32
_TAG_CONTEXT = b"caudal-cache-v2\0"
SECRET_ENV = "CAUDAL_CACHE_SECRET"


class Serializer(Protocol):
    def dumps(self, value: Any, /) -> bytes: ...
    def loads(self, data: bytes, /) -> Any: ...


class PickleSerializer:
    """The default serializer: ``pickle`` protocol 5."""

    protocol = 5

    def dumps(self, value: Any, /) -> bytes:
        return pickle.dumps(value, protocol=self.protocol)

    def loads(self, data: bytes, /) -> Any:
        return pickle.loads(data)


class _CorruptEntry(Exception):
    pass


class _Unauthenticated(Exception):
    pass


class ValueCodec:
    """Encodes and decodes one tier's values: its serializer, secret and
    compression settings. Stateless after construction (thread-safe)."""

    __slots__ = ("_compression", "_custom", "_level", "_secret", "_serializer", "_threshold")

    def __init__(
        self,
        serializer: Serializer,
        custom: bool,
        secret: bytes | None,
        compression: bool,
        threshold: int,
        level: int,
    ) -> None:
        self._serializer = serializer
        self._custom = custom
        self._secret = secret
        self._compression = compression
        self._threshold = threshold
        self._level = level

    def encode(self, name: str, value: Any) -> tuple[bytes, bool]:
        data: Any = None
        if self._custom:
            codec, data = _CODEC_CUSTOM, self._serializer.dumps(value)
        else:
            data = json_bytes(value)
            if data is not None:
                codec = _CODEC_JSON
        if data is None:
            if self._secret is None:
                raise TypeError(
                    f"a {type(value).__name__} is not exactly JSON, and a pickle needs a "
                    f"secret (RedisCacheTier(secret=...) or ${SECRET_ENV}): not shared"
                )
            codec, data = _CODEC_PICKLE, self._serializer.dumps(value)
        if not isinstance(data, bytes | bytearray):
            raise TypeError(f"serializer.dumps returned {type(data).__name__}, not bytes")
        compressed = False
        if self._compression and len(data) > self._threshold:
            frame = _core.compress(bytes(data), self._threshold, self._level)
            compressed = frame[0] == _FRAME_ZSTD
        else:
            frame = bytes((_FRAME_RAW,)) + data
        if self._secret is None:
            return bytes((FORMAT_VERSION, codec, _AUTH_NONE)) + frame, compressed
        header = bytes((FORMAT_VERSION, codec, _AUTH_HMAC))
        return header + self.tag(name, header, frame) + frame, compressed

    def tag(self, name: str, header: bytes, frame: Any) -> bytes:
        # Bound to the value's key: a tagged entry copied under another key
        # does not verify.
        return hmac_tag(self._secret or b"", _TAG_CONTEXT, name.encode(), b"\0", header, frame)

    def decode(self, name: str, raw: bytes) -> Any:
        if len(raw) < 4 or raw[0] != FORMAT_VERSION:
            raise _CorruptEntry(
                f"unknown format version byte 0x{raw[0]:02x}" if raw else "empty entry"
            )
        codec, auth = raw[1], raw[2]
        if codec not in (_CODEC_JSON, _CODEC_PICKLE, _CODEC_CUSTOM):
            raise _CorruptEntry(f"unknown codec byte 0x{codec:02x}")
        view = memoryview(raw)
        if auth == _AUTH_HMAC:
            if len(raw) < 4 + _TAG_LEN:
                raise _CorruptEntry("truncated tag")
            frame = view[3 + _TAG_LEN :]
            if self._secret is not None:
                if not tags_equal(self.tag(name, raw[:3], frame), raw[3 : 3 + _TAG_LEN]):
                    raise _Unauthenticated("its tag does not verify with this tier's secret")
            elif codec == _CODEC_PICKLE:
                raise _Unauthenticated("a pickle, and this tier has no secret to verify it")
        elif auth == _AUTH_NONE:
            frame = view[3:]
            if self._secret is not None:
                raise _Unauthenticated("no tag, and this tier requires one (it has a secret)")
            if codec == _CODEC_PICKLE:
                raise _Unauthenticated("an unauthenticated pickle")
        else:
            raise _CorruptEntry(f"unknown auth byte 0x{auth:02x}")
        kind = frame[0]
        if kind == _FRAME_RAW:
            body: Any = frame[1:]
        elif kind == _FRAME_ZSTD:
            body = _core.decompress(bytes(frame))
        else:
            raise _CorruptEntry(f"unknown frame byte 0x{kind:02x}")
        if codec == _CODEC_JSON:
            return json.loads(bytes(body))
        if codec == _CODEC_PICKLE:
            return pickle.loads(body)
        if not self._custom:
            raise _CorruptEntry("written with a custom serializer; this tier has none")
        return self._serializer.loads(bytes(body))


__all__ = ["FORMAT_VERSION", "SECRET_ENV", "PickleSerializer", "Serializer", "ValueCodec"]
