"""Redis keys of every type with awkward names and TTLs, and a read of them to compare a restore
with what was backed up."""

from __future__ import annotations

from typing import Any


def fill_every_type(client: Any, prefix: bytes) -> list[bytes]:
    """Keys of every Redis type with ugly names (UTF-8, binary, spaces, hash tags), some with
    TTLs, spread over every master; returns their names."""
    keys: list[bytes] = []
    for index in range(60):
        tag = f"{{order-items}}:{index}".encode() if index % 7 == 0 else b""
        base = prefix + "usérs:".encode() + tag + b" \xff\x00:%d" % index
        string, hashed, listed, members, ranked, stream = (
            base + suffix for suffix in (b":s", b":h", b":l", b":set", b":z", b":x")
        )
        client.set(string, b"\x00\xffvalue %d" % index)
        client.hset(hashed, mapping={b"2fa_codes": b"123", "naïve".encode(): b"%d" % index})
        client.rpush(listed, *[b"item-%d" % n for n in range(index % 5 + 1)])
        client.sadd(members, *[b"m%d" % n for n in range(index % 4 + 1)])
        client.zadd(ranked, {b"a": 1.5, b"b": index, b"c": -(2**53) - 1})
        client.xadd(stream, {b"field": b"value %d" % index})
        if index % 3 == 0:
            client.pexpire(string, 600_000 + index)
            client.pexpire(hashed, 900_000)
        keys += [string, hashed, listed, members, ranked, stream]
    return keys


def content(client: Any, keys: list[bytes]) -> dict[bytes, Any]:
    """Each key's type, value and absolute expiry, as read through ``client``."""
    readers = {
        b"string": client.get,
        b"hash": client.hgetall,
        b"list": lambda key: client.lrange(key, 0, -1),
        b"set": client.smembers,
        b"zset": lambda key: client.zrange(key, 0, -1, withscores=True),
        b"stream": client.xrange,
    }
    content = {}
    for key in keys:
        kind = client.type(key)
        content[key] = (kind, readers[kind](key), client.pexpiretime(key))
    return content
