"""The saver's byte budget: a blocked acquire goes on once its bytes fit, not before."""

from __future__ import annotations

import threading

from ferryman.engine.file_saver import ByteBudget


def test_a_waiter_proceeds_once_its_bytes_fit_whatever_the_release_sizes() -> None:
    budget = ByteBudget(100)
    budget.acquire(60)
    budget.acquire(35)  # 95 of 100 in use
    got = threading.Event()

    def walk() -> None:
        budget.acquire(20)  # fits once 15 more are free
        got.set()

    t = threading.Thread(target=walk)
    t.start()
    for _ in range(14):  # small releases (one per stored chunk): still not enough room
        budget.release(1)
    assert not got.wait(0.2)
    budget.release(1)  # 80 in use: 20 fit
    assert got.wait(10)
    t.join()
    # what it took is held: the rest is free again once everything is released
    budget.release(80)
    budget.release(20)
    budget.acquire(100)


def test_an_item_larger_than_the_limit_waits_for_an_empty_budget() -> None:
    budget = ByteBudget(100)
    budget.acquire(10)
    got = threading.Event()

    def take_big() -> None:
        budget.acquire(500)
        got.set()

    t = threading.Thread(target=take_big)
    t.start()
    assert not got.wait(0.2)
    budget.release(10)
    assert got.wait(10)
    t.join()
