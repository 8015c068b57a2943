"""The state table: slots, growth, free-list reuse, reset, get/set, idle expiry."""

from __future__ import annotations

import numpy as np
import pytest

from edge_lstm.state import Column, StateTable


def filled(table: StateTable, stream: str, value: float) -> None:
    table.set(stream, np.full((table.rows, table.state_size), value, np.float32))


def test_streams_get_their_own_rows_of_one_array():
    table = StateTable(5, rows=3, capacity=2)
    a, b = table.add("a"), table.add("b")
    assert a != b and len(table) == 2 and "a" in table and "c" not in table
    filled(table, "a", 1.0)
    filled(table, "b", 2.0)
    assert table.data.shape == (2, 3, 5) and table.data.dtype == np.float32
    assert (table.data[a] == 1.0).all() and (table.data[b] == 2.0).all()
    assert table.add("a") == a  # adding a known stream returns its slot
    assert table.streams() == ["a", "b"]
    assert table.stream_at(a) == "a"


def test_growing_keeps_states_and_columns():
    table = StateTable(4, capacity=2, columns={"seq": Column((), np.int64, 0), "ring": Column((3, 2), np.float32, np.nan)})
    for i in range(2):
        s = table.add(f"s{i}")
        filled(table, f"s{i}", float(i + 1))
        table.cols["seq"][s] = 10 + i
        table.cols["ring"][s] = i
    table.add("s2")  # full: doubles
    assert table.capacity == 4
    for i in range(2):
        s = table.slot(f"s{i}")
        assert (table.get(f"s{i}") == i + 1).all()
        assert table.cols["seq"][s] == 10 + i and (table.cols["ring"][s] == i).all()
    new = table.slot("s2")
    assert (table.data[new] == 0).all() and table.cols["seq"][new] == 0 and np.isnan(table.cols["ring"][new]).all()


def test_removed_slots_are_reused_zeroed_before_growing():
    table = StateTable(3, capacity=4, columns={"seq": Column((), np.int64, -1)})
    for name in "abcd":
        table.add(name)
        filled(table, name, 7.0)
        table.cols["seq"][table.slot(name)] = 5
    freed = table.slot("b")
    assert table.remove("b") and not table.remove("b")
    slot = table.add("e")
    assert slot == freed and table.capacity == 4
    assert (table.get("e") == 0).all() and table.cols["seq"][slot] == -1
    assert (table.get("a") == 7.0).all()


def test_reset_zeroes_one_stream_only():
    table = StateTable(3, rows=2)
    table.add("a")
    table.add("b")
    filled(table, "a", 1.0)
    filled(table, "b", 2.0)
    assert table.reset("a") and not table.reset("nope")
    assert (table.get("a") == 0).all() and (table.get("b") == 2.0).all()


def test_get_returns_a_copy_and_set_checks_the_shape():
    table = StateTable(3, rows=2)
    table.add("a")
    got = table.get("a")
    got[:] = 9.0
    assert (table.get("a") == 0).all()
    with pytest.raises(ValueError, match="expected"):
        table.set("a", np.zeros((1, 3)))
    with pytest.raises(KeyError):
        table.get("unknown")


def test_add_many_allocates_only_new_streams():
    table = StateTable(2, capacity=1)
    first = table.add("x")
    slots = table.add_many(["y", "x", "z"], now=5.0)
    assert slots.dtype == np.int64 and slots[1] == first and len(set(slots.tolist())) == 3
    assert table.cols["last_seen"][slots[0]] == 5.0


def test_idle_streams_expire_and_are_reported():
    table = StateTable(2)
    table.add("old", now=100.0)
    table.add("busy", now=100.0)
    table.add("new", now=150.0)
    table.touch(table.slot("busy"), 160.0)
    assert sorted(table.idle(now=170.0, timeout=30.0)) == ["old"]
    assert table.expire(now=170.0, timeout=30.0) == ["old"]
    assert table.streams() == ["busy", "new"]
    assert table.expire(now=170.0, timeout=30.0) == []
    assert sorted(table.expire(now=1000.0, timeout=30.0)) == ["busy", "new"]
    assert len(table) == 0 and table.idle(now=2000.0, timeout=1.0) == []
