"""The history holds the admins' addresses (admin events): it is created 0640, group the control
socket's (the web UI's group), never readable by everyone (issue 14, item 12)."""

from __future__ import annotations

import grp
import os

import pytest

from linkwatch.history import Batch, HistoryStore, event_row
from tests.unit.test_history import BASE, state


def modes(path) -> dict[str, int]:
    return {suffix: os.stat(str(path) + suffix).st_mode & 0o777 for suffix in ("", "-wal", "-shm")}


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077])
def test_new_files_are_readable_by_the_group_only_whatever_the_umask(tmp_path, umask):
    path = tmp_path / "h.db"
    old = os.umask(umask)
    try:
        store = HistoryStore(str(path))
        store.write(Batch(events=[event_row(state(BASE))]))
        got = modes(path)
        store.close()
    finally:
        os.umask(old)
    assert got == {"": 0o640, "-wal": 0o640, "-shm": 0o640}


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the file another group")
def test_the_file_belongs_to_the_readers_group(tmp_path):
    group = grp.getgrnam("nogroup" if _exists("nogroup") else "daemon")
    path = tmp_path / "h.db"
    store = HistoryStore(str(path), group=group.gr_name)
    store.write(Batch(events=[event_row(state(BASE))]))
    gids = {suffix: os.stat(str(path) + suffix).st_gid for suffix in ("", "-wal", "-shm")}
    store.close()
    assert gids == {"": group.gr_gid, "-wal": group.gr_gid, "-shm": group.gr_gid}


def _exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


def test_an_existing_file_keeps_its_mode(tmp_path):
    path = tmp_path / "h.db"
    path.touch(mode=0o600)
    os.chmod(path, 0o600)
    HistoryStore(str(path)).close()
    assert os.stat(path).st_mode & 0o777 == 0o600
