"""Cache clients: Redis (one server, Sentinel, Cluster) and the in-process memory backend behind
one interface."""

from ._backend import CacheBackend, FencedBatch
from ._client import CacheClient
from ._cluster import ClusterCache
from ._codec import Codec, JsonCodec, RawCodec
from ._memory import MemoryCache
from ._redis import RedisCache
from ._sentinel import SentinelCache

__all__ = [
    "CacheBackend",
    "CacheClient",
    "ClusterCache",
    "Codec",
    "FencedBatch",
    "JsonCodec",
    "MemoryCache",
    "RawCodec",
    "RedisCache",
    "SentinelCache",
]
