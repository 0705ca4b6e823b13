"""storage.parallel: results in order; a failure raises the failed item's own error and cancels the rest."""

from __future__ import annotations

import time

import pytest

from artlora.io import storage


def test_results_come_in_the_order_of_the_items():
    assert storage.parallel(lambda n: n * n, range(40), workers=4) == [n * n for n in range(40)]


def test_a_failed_item_raises_its_own_error_and_what_has_not_started_is_cancelled():
    started = []

    def fn(n: int) -> int:
        started.append(n)
        if n == 1:
            raise KeyError("item 1")
        time.sleep(0.001)  # all 1000 would take half a second on two threads
        return n

    with pytest.raises(KeyError, match="item 1"):
        storage.parallel(fn, range(1000), workers=2)
    assert len(started) < 1000
