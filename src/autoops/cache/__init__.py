"""Cache clients: Redis and the in-process memory backend behind one interface."""

from ._client import TTL, CacheClient
from ._codec import Codec, JsonCodec, RawCodec
from ._memory import MemoryCache
from ._redis import RedisCache

__all__ = ["TTL", "CacheClient", "Codec", "JsonCodec", "MemoryCache", "RawCodec", "RedisCache"]
