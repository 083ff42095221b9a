"""The one resumable result store: keyed rows, one JSON line each, appended atomically (05's grid, 06's study).

A row is a JSON object; its key is the tuple of its ``key_fields`` (the bare value when there is one field). Rules:

- ``append`` adds one line in a single ``write`` and flushes it to disk (``fsync``); earlier bytes are never
  rewritten, so a crash loses at most the row being written.
- A last line cut short by a crash (no newline at its end, not valid JSON) is ignored with a warning on reading and
  cut off before the next append; a damaged line anywhere else is an error (nothing is guessed).
- A key may be stored more than once: the last row wins (``latest``); ``compact`` drops the superseded rows.
- Rows that a caller's rule does not take as current (other numerics, settings or identities) are kept and counted
  (``status``) until ``prune(keep)`` drops them; ``prune`` and ``compact`` rewrite the file atomically (temporary
  file beside it, flushed, then renamed).
- Optional meta file ``<stem>.meta.json`` (when ``format_version`` is given): the store's format version (a meta
  file that declares none, or no meta file beside stored rows, is format 1), its key fields and run stamps
  (``runs``: run id -> stamp, each written once when its run stores its first row; rows name theirs in ``run``).
- Appends from several processes on one machine take turns (``fcntl.flock``); ``lock=False`` leaves that out for a
  file with a single writer (a dispatched job's shard, :mod:`nbhelpers.dispatch`), where a cluster's shared
  filesystem may not support ``flock``.
"""
from __future__ import annotations

import fcntl
import json
import os
import warnings
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from pathlib import Path

from nbhelpers.results import meta_path
from nbhelpers.utils import atomic_path

_CHUNK = 1 << 16


def _line(row: Mapping[str, object]) -> bytes:
    """One row as its stored line (sorted keys, newline-terminated)."""
    return (json.dumps(dict(row), sort_keys=True, allow_nan=True) + "\n").encode()


class JsonlStore:
    """Keyed, resumable JSON-lines store with atomic appends and an optional meta file (format version, run stamps)."""

    def __init__(self, path: str | os.PathLike, *, key_fields: Sequence[str] = ("key",),
                 format_version: int | None = None, description: str = "", lock: bool = True) -> None:
        if not key_fields or not all(isinstance(f, str) and f for f in key_fields):
            raise ValueError(f"key_fields must be non-empty field names, got {key_fields!r}")
        if format_version is not None and (not isinstance(format_version, int) or format_version < 1):
            raise ValueError(f"format_version must be an integer >= 1 or None, got {format_version!r}")
        self.path = Path(path)
        self.key_fields = tuple(key_fields)
        self.format_version = format_version
        self.description = description
        self.lock = lock  # flock around each append (False: a file with one writer, e.g. a job's shard)

    # ------------------------------------------------------------------------------------------- reading
    @property
    def meta_path(self) -> Path:
        """The meta file beside the JSON lines (``<stem>.meta.json``)."""
        return meta_path(self.path)

    def key(self, row: Mapping[str, object]) -> Hashable:
        """A row's key: the value of its one key field, or the tuple of its key fields; an error if one is missing."""
        missing = [f for f in self.key_fields if f not in row]
        if missing:
            raise ValueError(f"a row of {self.path.name} needs the key field(s) {missing}")
        if len(self.key_fields) == 1:
            return row[self.key_fields[0]]
        return tuple(row[f] for f in self.key_fields)

    def _read(self) -> tuple[list[dict], bool]:
        """(complete rows in file order, whether the last line is cut short)."""
        if not self.path.is_file():
            return [], False
        lines = self.path.read_text().split("\n")
        rows, cut = [], False
        last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
        for i, line in enumerate(lines[:last + 1]):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                if i < len(lines) - 1:  # a line with its newline was written whole: damage, not a crash
                    raise ValueError(f"{self.path}: row {i + 1} is not valid JSON ({err}); remove the line or the "
                                     "file") from err
                cut = True
        return rows, cut

    def rows(self) -> list[dict]:
        """Every complete row in file order (superseded ones included); warns about a last line cut short."""
        rows, cut = self._read()
        if cut:
            warnings.warn(f"{self.path}: the last line is cut short (a run stopped while writing it); it is ignored, "
                          "and the next append cuts it off", stacklevel=2)
        return rows

    def latest(self) -> dict[Hashable, dict]:
        """{key: the last row stored under it}, keys in the order of their first row."""
        out: dict[Hashable, dict] = {}
        for row in self.rows():
            out[self.key(row)] = row
        return out

    def has(self, key: Hashable) -> bool:
        """Whether a row with this key is stored."""
        return any(self.key(r) == key for r in self.rows())

    def meta(self) -> dict:
        """The meta file's content ({} when there is none)."""
        if not self.meta_path.is_file():
            return {}
        try:
            return json.loads(self.meta_path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{self.meta_path} is not valid JSON ({err})") from err

    def runs(self) -> dict[str, dict]:
        """Run stamps of the meta file, by run id."""
        return dict(self.meta().get("runs", {}))

    def stored_format(self) -> int:
        """Format version on disk: the meta file's; 1 when it declares none (or there is none beside stored rows);
        this code's for a store not yet written. Refuses a version this code cannot read."""
        if self.format_version is None:
            raise ValueError(f"the store {self.path} has no format version (no meta file)")
        meta = self.meta()
        if meta:
            version = meta.get("format_version", 1)
        else:
            version = 1 if self.path.is_file() and self.path.stat().st_size else self.format_version
        if not isinstance(version, int) or not 1 <= version <= self.format_version:
            raise ValueError(f"{self.path} is a store of format {version!r}; this code reads formats 1 to "
                             f"{self.format_version}: update the code, or move the file away to start a new store")
        return version

    def status(self, current: Callable[[Mapping], bool] | None = None) -> dict[str, object]:
        """Counts: lines (complete rows), keys, superseded (older rows of a key), current and other (latest rows that
        current(row) takes or not; all current without a rule), cut_tail (a cut last line), format_version."""
        rows, cut = self._read()
        latest: dict[Hashable, dict] = {}
        for row in rows:
            latest[self.key(row)] = row
        n_current = sum(1 for r in latest.values() if current is None or current(r))
        out: dict[str, object] = {"path": str(self.path), "lines": len(rows), "keys": len(latest),
                                  "superseded": len(rows) - len(latest), "current": n_current,
                                  "other": len(latest) - n_current, "cut_tail": cut}
        if self.format_version is not None:
            out["format_version"] = self.stored_format()
            out["runs"] = len(self.runs())
        return out

    # ------------------------------------------------------------------------------------------- writing
    def _base_meta(self) -> dict:
        return {"table": self.path.stem, "format": self.description, "format_version": self.format_version,
                "key_fields": list(self.key_fields), "runs": {}}

    def _write_meta(self, meta: Mapping[str, object]) -> None:
        with atomic_path(self.meta_path) as tmp:
            with open(tmp, "w") as fh:
                fh.write(json.dumps(dict(meta), indent=1, sort_keys=True) + "\n")
                fh.flush()
                os.fsync(fh.fileno())

    def _check_writable(self) -> None:
        """Appending needs a store of this code's format (an older one is converted and rewritten first)."""
        if self.format_version is not None and self.stored_format() != self.format_version:
            raise ValueError(f"{self.path} is of format {self.stored_format()}; rewrite it in format "
                             f"{self.format_version} (its reader's conversion, then rewrite) before appending")

    def add_run(self, run_id: str, stamp: Mapping[str, object]) -> None:
        """Record a run's stamp in the meta file (once: nothing is written when the run is already there)."""
        if self.format_version is None:
            raise ValueError(f"the store {self.path} keeps no run stamps (it has no format version)")
        self._check_writable()
        meta = self.meta() or self._base_meta()
        runs = dict(meta.get("runs", {}))
        if run_id in runs:
            return
        runs[run_id] = dict(stamp)
        meta.pop("rows", None)  # a row count (older meta files) would go stale with the next append
        self._write_meta({**meta, "runs": runs})

    def _cut_tail(self, fd: int, end: int) -> int:
        """Cut a partial last line off the open file (keep a complete one, adding its newline); returns the new end."""
        pos = end
        tail = b""
        while pos > 0:
            start = max(0, pos - _CHUNK)
            chunk = os.pread(fd, pos - start, start)
            tail = chunk + tail
            pos = start
            if b"\n" in chunk:
                break
        last = tail[tail.rfind(b"\n") + 1:] if b"\n" in tail else tail
        try:
            json.loads(last)
        except (json.JSONDecodeError, UnicodeDecodeError):
            warnings.warn(f"{self.path}: the last line is cut short (a run stopped while writing it); it is cut off "
                          "before this append", stacklevel=3)
            os.ftruncate(fd, end - len(last))
            return end - len(last)
        os.write(fd, b"\n")  # a complete row whose newline is missing (edited by hand): keep it
        return end + 1

    def append(self, row: Mapping[str, object], *, replace: bool = False) -> None:
        """Add one row: one line appended in a single write and flushed to disk; earlier rows are never rewritten,
        a last line cut short by a crash is cut off first. A key already stored is an error unless replace (the new
        row then supersedes the old one)."""
        key = self.key(row)
        if not replace and any(self.key(r) == key for r in self._read()[0]):
            raise ValueError(f"row {key!r} is already stored in {self.path}")
        data = _line(row)
        self._check_writable()
        if self.format_version is not None and not self.meta_path.is_file():
            self._write_meta(self._base_meta())  # a new store says its format from its first row on
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o666)
        try:
            if self.lock:  # workers appending to one store take turns (released by close)
                fcntl.flock(fd, fcntl.LOCK_EX)
            end = os.fstat(fd).st_size
            if end and os.pread(fd, 1, end - 1) != b"\n":
                self._cut_tail(fd, end)
            written = os.write(fd, data)
            if written != len(data):
                raise OSError(f"{self.path}: wrote {written} of {len(data)} bytes of a row; the next append cuts it")
            os.fsync(fd)
        finally:
            os.close(fd)

    def rewrite(self, rows: Iterable[Mapping[str, object]], *, runs: Mapping[str, Mapping] | None = None) -> None:
        """Replace the whole store atomically (temporary file, flushed, renamed): the rows, and with a meta file its
        stamps of the runs the rows name (runs: stamps to choose from; default the meta file's). Used by prune,
        compact and the conversion of an older format."""
        rows = [dict(r) for r in rows]
        for row in rows:
            self.key(row)
        if self.format_version is not None:
            meta = {**(self.meta() or self._base_meta()), **{k: v for k, v in self._base_meta().items() if k != "runs"}}
            meta.pop("rows", None)  # a count would have to be rewritten with every row
            stamps = dict(runs) if runs is not None else dict(meta.get("runs", {}))
            used = {r.get("run") for r in rows}
            meta["runs"] = {k: dict(v) for k, v in stamps.items() if k in used}
            self._write_meta(meta)
        with atomic_path(self.path) as tmp:
            with open(tmp, "wb") as fh:
                fh.write(b"".join(_line(r) for r in rows))
                fh.flush()
                os.fsync(fh.fileno())

    def prune(self, keep: Callable[[Mapping], bool]) -> int:
        """Drop every row for which keep(row) is false, and superseded rows; the last row of each kept key stays where
        its key first appeared. Rewrites the store atomically only when something goes; returns how many rows went."""
        rows, cut = self._read()
        latest: dict[Hashable, dict] = {}
        for row in rows:
            latest[self.key(row)] = row
        kept = [r for r in latest.values() if keep(r)]
        if len(kept) < len(rows) or cut:
            self.rewrite(kept)
        return len(rows) - len(kept)

    def compact(self) -> int:
        """Drop superseded rows (and a cut last line), rewriting atomically; returns how many rows went."""
        return self.prune(lambda row: True)
