"""Ids: the cached head must never make two ids equal or one id malformed, threads included."""

from __future__ import annotations

import re
import threading

from bus.ids import ID_PATTERN, new_id


def test_ids_stay_unique_and_well_formed_across_threads() -> None:
    batches: list[list[str]] = []
    start = threading.Barrier(4)

    def make() -> None:
        start.wait()
        batches.append([new_id() for _ in range(20_000)])

    threads = [threading.Thread(target=make) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ids = [i for batch in batches for i in batch]
    assert len(set(ids)) == len(ids) == 80_000
    pattern = re.compile(ID_PATTERN)
    assert all(pattern.match(i) for i in ids)
    for batch in batches:
        assert batch == sorted(batch), "each thread sees increasing ids"


def test_ids_increase_across_counter_rollover_of_the_last_byte() -> None:
    ids = [new_id() for _ in range(1_000)]
    assert ids == sorted(ids)
    assert len({i[-2:] for i in ids}) == 256, "the last byte cycles through every value"
