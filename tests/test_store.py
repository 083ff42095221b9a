"""The shared JSON-lines store (05's grid, 06's study): appends that never rewrite earlier bytes, a cut last line
ignored then cut, other rows kept and counted, atomic prune / compact, the optional meta file and run stamps."""
from __future__ import annotations

import json
import os

import pytest

from nbhelpers import grid, store as store_mod, study
from nbhelpers.store import JsonlStore


def _store(tmp_path, **kw) -> JsonlStore:
    return JsonlStore(tmp_path / "s.jsonl", key_fields=("name", "v"), **kw)


def test_append_adds_one_fsynced_line_in_one_write_and_never_rewrites_earlier_bytes(tmp_path, monkeypatch):
    s = _store(tmp_path)
    s.append({"name": "a", "v": 1, "x": 0.5})
    before, inode = s.path.read_bytes(), os.stat(s.path).st_ino
    writes, syncs = [], []
    real_write, real_fsync = os.write, os.fsync
    monkeypatch.setattr(os, "write", lambda fd, data: writes.append(bytes(data)) or real_write(fd, data))
    monkeypatch.setattr(os, "fsync", lambda fd: syncs.append(fd) or real_fsync(fd))
    s.append({"name": "b", "v": 1, "x": 0.25})
    after = s.path.read_bytes()
    assert after[:len(before)] == before and os.stat(s.path).st_ino == inode  # same file, only its tail grew
    assert writes == [after[len(before):]] and after.endswith(b"\n") and after.count(b"\n") == 2
    assert len(syncs) == 1
    assert [r["name"] for r in s.rows()] == ["a", "b"]


def test_a_key_is_stored_once_unless_replaced_and_the_last_row_wins(tmp_path):
    s = _store(tmp_path)
    s.append({"name": "a", "v": 1, "x": 1})
    with pytest.raises(ValueError, match="already stored"):
        s.append({"name": "a", "v": 1, "x": 2})
    with pytest.raises(ValueError, match=r"key field\(s\) \['v'\]"):
        s.append({"name": "b"})
    assert len(s.rows()) == 1  # refused rows wrote nothing
    s.append({"name": "b", "v": 1, "x": 3})
    s.append({"name": "a", "v": 1, "x": 4}, replace=True)
    assert s.has(("a", 1)) and not s.has(("a", 2))
    assert {k: r["x"] for k, r in s.latest().items()} == {("a", 1): 4, ("b", 1): 3}
    assert list(s.latest()) == [("a", 1), ("b", 1)]  # keys in the order of their first row
    with pytest.raises(ValueError, match="key_fields"):
        JsonlStore(tmp_path / "t.jsonl", key_fields=())


def test_a_cut_last_line_is_ignored_with_a_warning_then_cut_by_the_next_append(tmp_path):
    s = _store(tmp_path)
    s.append({"name": "a", "v": 1})
    s.append({"name": "b", "v": 1})
    whole = s.path.read_bytes()
    with open(s.path, "ab") as fh:
        fh.write(b'{"name": "c", "v": 1, "x": 0.12')  # a run killed mid-write
    with pytest.warns(UserWarning, match="cut short"):
        assert [r["name"] for r in s.rows()] == ["a", "b"]
    assert s.status()["cut_tail"] is True
    with pytest.warns(UserWarning, match="cut off"):
        s.append({"name": "d", "v": 1})
    assert s.path.read_bytes() == whole + b'{"name": "d", "v": 1}\n'
    assert [r["name"] for r in s.rows()] == ["a", "b", "d"] and s.status()["cut_tail"] is False
    # a complete last row that only lacks its newline (edited by hand) is kept, not cut
    s.path.write_bytes(s.path.read_bytes().rstrip(b"\n"))
    s.append({"name": "e", "v": 1})
    assert [r["name"] for r in s.rows()] == ["a", "b", "d", "e"]
    # damage anywhere else is an error, never guessed at
    s.path.write_text(s.path.read_text().replace('"b"', '"b', 1))
    with pytest.raises(ValueError, match="row 2 is not valid JSON"):
        s.rows()


def test_rows_that_are_not_current_are_kept_counted_and_pruned_atomically(tmp_path):
    s = _store(tmp_path)
    for name, v in [("a", 1), ("b", 1), ("a", 2), ("c", 2)]:
        s.append({"name": name, "v": v})
    s.append({"name": "a", "v": 2, "x": "newer"}, replace=True)
    current = lambda r: r["v"] == 2  # noqa: E731
    assert len(s.rows()) == 5  # nothing is dropped on reading or appending
    status = s.status(current)
    assert {k: status[k] for k in ("lines", "keys", "superseded", "current", "other", "cut_tail")} == \
        {"lines": 5, "keys": 4, "superseded": 1, "current": 2, "other": 2, "cut_tail": False}
    inode = os.stat(s.path).st_ino
    assert s.prune(current) == 3  # two other rows and one superseded
    assert [(r["name"], r["v"], r.get("x")) for r in s.rows()] == [("a", 2, "newer"), ("c", 2, None)]
    assert os.stat(s.path).st_ino != inode  # a new file renamed into place, not the old one edited
    assert not list(tmp_path.glob(".*.tmp"))
    assert s.prune(current) == 0 and s.compact() == 0


def test_compact_keeps_each_keys_last_row_in_place_and_a_failed_rewrite_changes_nothing(tmp_path, monkeypatch):
    s = _store(tmp_path)
    for name in "abc":
        s.append({"name": name, "v": 1, "x": 0})
    s.append({"name": "b", "v": 1, "x": 1}, replace=True)
    before = s.path.read_bytes()

    def broken(row):
        raise OSError("disk full")
    monkeypatch.setattr(store_mod, "_line", broken)
    with pytest.raises(OSError, match="disk full"):
        s.compact()
    assert s.path.read_bytes() == before and not list(tmp_path.glob(".*.tmp"))
    monkeypatch.undo()
    assert s.compact() == 1
    assert [(r["name"], r["x"]) for r in s.rows()] == [("a", 0), ("b", 1), ("c", 0)]


def test_meta_file_holds_the_format_and_each_run_stamp_written_once(tmp_path):
    s = _store(tmp_path, format_version=3, description="test store")
    assert s.stored_format() == 3 and not s.meta_path.exists()  # nothing written yet: this code's format
    s.add_run("r1", {"code_version": "abc"})
    s.append({"name": "a", "v": 1, "run": "r1"})
    meta = json.loads(s.meta_path.read_text())
    assert meta["format_version"] == 3 and meta["key_fields"] == ["name", "v"] and meta["runs"] == {
        "r1": {"code_version": "abc"}}
    stamp = os.stat(s.meta_path)
    s.append({"name": "b", "v": 1, "run": "r1"})
    s.add_run("r1", {"code_version": "abc"})
    again = os.stat(s.meta_path)
    assert (again.st_ino, again.st_mtime_ns) == (stamp.st_ino, stamp.st_mtime_ns)  # no rewrite per row or per call
    s.add_run("r2", {"code_version": "def"})
    assert set(s.runs()) == {"r1", "r2"} and s.status()["runs"] == 2
    s.prune(lambda r: r["name"] == "a")
    assert set(s.runs()) == {"r1"}  # a rewrite keeps the stamps of the runs its rows name
    # rows without a meta file are format 1; a newer format is refused before anything is read
    s.meta_path.unlink()
    assert s.stored_format() == 1
    with pytest.raises(ValueError, match="format 1"):
        s.append({"name": "c", "v": 1})
    s.meta_path.write_text(json.dumps({"format_version": 4}))
    with pytest.raises(ValueError, match="format 4; this code reads formats 1 to 3"):
        s.stored_format()


def test_the_study_store_and_the_grid_store_are_the_shared_store(tmp_path):
    assert issubclass(study.StudyStore, JsonlStore)
    st = study.StudyStore(tmp_path / "06.jsonl")
    st.append({"key": "k1", "stage": "test"})
    assert st.rows(stage="test") == [{"key": "k1", "stage": "test"}] and st.has("k1")
    with pytest.raises(ValueError, match="non-empty string 'key'"):
        st.append({"key": "", "stage": "test"})
    g = grid.open_store(tmp_path / "05.jsonl")
    assert isinstance(g, JsonlStore) and g.key_fields == grid.KEY_FIELDS
    assert g.format_version == grid.STORE_FORMAT_VERSION
