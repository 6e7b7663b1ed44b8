"""CacheClient against hand-written redis-py, side by side in one run.

1. set_many of 100,000 JSON values vs a redis-py pipeline (json.dumps, SET per key, execute every
   10,000): target at least 0.9x its throughput.
2. Per-call get/set vs raw redis-py get/set (with json.dumps/json.loads, as a user would write):
   target within 15% overhead.

Rounds alternate between the contenders so load from elsewhere on the machine hits both alike.
Run: .venv/bin/python benchmarks/bench_cache.py [--keys 100000] [--calls 20000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import time
import uuid
from collections.abc import Callable

import redis

import autoops

URL = "redis://127.0.0.1:6379/0"


def rows(count: int) -> dict[str, dict[str, object]]:
    created = dt.datetime(2026, 1, 1, 12, 0, 0)
    return {
        f"user:{i}": {
            "id": i,
            "username": f"user{i}",
            "email": f"user{i}@example.com",
            "updated_at": (created + dt.timedelta(seconds=i)).isoformat(),
        }
        for i in range(count)
    }


def best_of(rounds: int, fn: Callable[[], None]) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    namespace = f"bench:{uuid.uuid4().hex[:8]}"
    raw = redis.Redis.from_url(URL)
    cache = autoops.CacheClient.from_url(URL, namespace=namespace)
    data = rows(args.keys)
    prefixed = {f"{namespace}:raw:{key}": value for key, value in data.items()}

    def peer_set_many() -> None:
        pipe = raw.pipeline(transaction=False)
        for index, (key, value) in enumerate(prefixed.items(), 1):
            pipe.set(key, json.dumps(value))
            if index % 10_000 == 0:
                pipe.execute()
        pipe.execute()

    def ours_set_many() -> None:
        cache.set_many(data)

    peer_times, our_times = [], []
    for _ in range(args.rounds):
        peer_times.append(best_of(1, peer_set_many))
        our_times.append(best_of(1, ours_set_many))
    peer_rate = args.keys / min(peer_times)
    our_rate = args.keys / min(our_times)
    print(f"set_many {args.keys:,} JSON values (best of {args.rounds}):")
    print(f"  redis-py pipeline      {peer_rate:12,.0f} keys/s")
    print(f"  CacheClient.set_many   {our_rate:12,.0f} keys/s")
    print(f"  ratio                  {our_rate / peer_rate:12.2f}x  (target >= 0.90x)")

    value = data["user:1"]
    raw_key = f"{namespace}:raw:one"
    block = 500

    def peer_calls() -> None:
        for _ in range(block):
            raw.set(raw_key, json.dumps(value))
            json.loads(raw.get(raw_key))  # type: ignore[arg-type]

    def our_calls() -> None:
        for _ in range(block):
            cache.set("one", value)
            cache.get("one")

    # Short alternating blocks, compared pairwise: load from elsewhere hits both sides of a pair.
    ratios, peer_call, our_call = [], [], []
    for _ in range(max(1, args.calls // block)):
        peer = best_of(1, peer_calls)
        ours = best_of(1, our_calls)
        ratios.append(ours / peer)
        peer_call.append(peer / (2 * block))
        our_call.append(ours / (2 * block))
    peer_us = statistics.median(peer_call) * 1e6
    our_us = statistics.median(our_call) * 1e6
    overhead = 100 * (statistics.median(ratios) - 1)
    print(f"get+set, {args.calls:,} pairs in alternating blocks of {block}:")
    print(f"  raw redis-py + json    {peer_us:8.1f} us/call (median)")
    print(f"  CacheClient            {our_us:8.1f} us/call (median)")
    print(f"  overhead               {overhead:+8.1f} %  (median of paired ratios; target <= +15%)")

    cache.delete_prefix("")
    cache.close()
    raw.close()


if __name__ == "__main__":
    main()
