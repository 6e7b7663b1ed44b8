"""The Cluster backend's split of packed rows by master (pure functions: no servers).

The split cuts rows at CRLFs when the keys and values hold none and walks them by their headers
otherwise; both must give every master exactly its rows, in order, as they were packed.
"""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from autoops._resp import pack_arguments
from autoops.cache._cluster import _by_slot_shares, _quads, _split

# Keys and values made of what matters to the split: CRLFs, headers, digits, hash-tag braces.
_PARTS = st.sampled_from(
    [b"\r\n", b"\r", b"\n", b"$", b"$3\r\n", b"\r\n$1\r\n", b"1", b"0", b"{", b"}", b"a", b"\xff"]
)
_BYTES = st.lists(_PARTS, max_size=6).map(b"".join)


@given(
    rows=st.lists(st.tuples(_BYTES, _BYTES), max_size=12),
    masters=st.integers(1, 5),
    seed=st.integers(0, 2**32),
)
def test_split_gives_each_master_its_rows_in_order_as_packed(
    rows: list[tuple[bytes, bytes]], masters: int, seed: int
) -> None:
    chooser = random.Random(seed)
    owner = [chooser.randrange(masters) for _ in range(16384)]
    packed = pack_arguments([part for row in rows for part in row])
    # The C-level passes, and the walk (taken for binary values or more than 255 masters).
    for quads in (_quads(owner, masters), []):
        shares = _split(packed, len(rows), owner, quads, masters)
        assert len(shares) == masters
        for index, share in enumerate(shares):
            mine = [row for row in rows if owner[key_slot(row[0])] == index]
            assert share.rows == pack_arguments([part for row in mine for part in row])
            assert share.count == len(mine)
            assert share.slot == (key_slot(mine[0][0]) if mine else -1)
            # The fallback for a node that refuses its script: one share per slot.
            by_slot = {part.slot: part for part in _by_slot_shares(share)}
            assert set(by_slot) == {key_slot(row[0]) for row in mine}
            for slot, part in by_slot.items():
                theirs = [row for row in mine if key_slot(row[0]) == slot]
                assert part.rows == pack_arguments([p for row in theirs for p in row])
                assert part.count == len(theirs)


def test_more_masters_than_a_byte_numbers_are_walked() -> None:
    owner = [slot % 300 for slot in range(16384)]
    assert _quads(owner, 300) == []
    rows = [(b"user:%d" % number, b"value %d" % number) for number in range(50)]
    packed = pack_arguments([part for row in rows for part in row])
    shares = _split(packed, len(rows), owner, [], 300)
    for index, share in enumerate(shares):
        mine = [row for row in rows if owner[key_slot(row[0])] == index]
        assert share.rows == pack_arguments([part for row in mine for part in row])
        assert share.count == len(mine)
