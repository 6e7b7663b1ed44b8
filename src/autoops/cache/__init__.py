"""Cache clients: Redis and the in-process memory backend behind one interface."""

from ._backend import CacheBackend, FencedBatch
from ._client import CacheClient
from ._codec import Codec, JsonCodec, RawCodec
from ._memory import MemoryCache
from ._redis import RedisCache

__all__ = [
    "CacheBackend",
    "CacheClient",
    "Codec",
    "FencedBatch",
    "JsonCodec",
    "MemoryCache",
    "RawCodec",
    "RedisCache",
]
