"""Hooks run with the engine's capabilities: only scripts and a directory that nobody but root or
the engine's user can change are run (issue 14). The test runs as root, so files it gives to
nobody (uid 65534) stand for another user's; skipped otherwise."""

from __future__ import annotations

import asyncio
import logging
import os

import pytest

from linkwatch.sinks.hooks import HookSink, directory_problem
from tests.unit.test_hooks import change, write_hook

NOBODY = 65534


def ran(out) -> list[str]:
    path = out / "ran"
    return path.read_text().split() if path.exists() else []


@pytest.fixture
def dirs(tmp_path):
    hooks, out = tmp_path / "hooks.d", tmp_path / "out"
    hooks.mkdir(mode=0o755)
    out.mkdir()
    out.chmod(0o777)  # a hook refused or not, writing here is never what stops it
    return hooks, out


def test_unsafe_hooks_are_refused_with_a_clear_message_and_the_others_run(dirs, caplog):
    hooks, out = dirs
    write_hook(hooks, "10-good", f"echo 10-good >> {out}/ran")
    write_hook(hooks, "20-world", f"echo 20-world >> {out}/ran", mode=0o777)
    write_hook(hooks, "30-group", f"echo 30-group >> {out}/ran", mode=0o775)
    target = write_hook(out, "elsewhere", f"echo 40-link >> {out}/ran")
    os.symlink(target, hooks / "40-link")
    if os.geteuid() == 0:
        os.chown(write_hook(hooks, "50-nobody", f"echo 50-nobody >> {out}/ran"), NOBODY, NOBODY)
    write_hook(hooks, "90-good", f"echo 90-good >> {out}/ran")
    with caplog.at_level(logging.WARNING, logger="linkwatch.sinks.hooks"):
        asyncio.run(HookSink(str(hooks), timeout=5).handle(change("UP", "DOWN")))
        asyncio.run(HookSink(str(hooks), timeout=5).handle(change("DOWN", "UP")))
    assert ran(out) == ["10-good", "90-good"] * 2
    text = caplog.text
    assert "hook 20-world in" in text and "refused: it is group- or world-writable (mode 0777;" in text
    assert "refused: it is group- or world-writable (mode 0775;" in text
    assert "hook 40-link in" in text and "refused: it is a symbolic link" in text
    if os.geteuid() == 0:
        assert "refused: it is owned by uid 65534, not by root or the engine's user" in text


def test_a_refusal_is_logged_once_per_hook(dirs, caplog):
    hooks, out = dirs
    write_hook(hooks, "20-world", "true", mode=0o777)
    sink = HookSink(str(hooks), timeout=5)
    with caplog.at_level(logging.WARNING, logger="linkwatch.sinks.hooks"):
        for _ in range(3):
            asyncio.run(sink.handle(change("UP", "DOWN")))
    assert caplog.text.count("hook 20-world in") == 1


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o757])
def test_an_unsafe_directory_runs_no_hook(dirs, caplog, mode):
    hooks, out = dirs
    write_hook(hooks, "10-good", f"echo 10-good >> {out}/ran")
    hooks.chmod(mode)
    with caplog.at_level(logging.WARNING, logger="linkwatch.sinks.hooks"):
        asyncio.run(HookSink(str(hooks), timeout=5).handle(change("UP", "DOWN")))
    assert ran(out) == []
    assert f"hook directory {hooks} refused: it is group- or world-writable (mode {mode:04o};" in caplog.text


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the directory to another user")
def test_a_directory_owned_by_another_user_runs_no_hook(dirs, caplog):
    hooks, out = dirs
    write_hook(hooks, "10-good", f"echo 10-good >> {out}/ran")
    os.chown(hooks, NOBODY, NOBODY)
    with caplog.at_level(logging.WARNING, logger="linkwatch.sinks.hooks"):
        asyncio.run(HookSink(str(hooks), timeout=5).handle(change("UP", "DOWN")))
    assert ran(out) == []
    assert "refused: it is owned by uid 65534, not by root or the engine's user" in caplog.text


def test_a_symlinked_hook_directory_runs_no_hook(dirs, caplog):
    """The link itself is checked (lstat): a symlink to a safe 0755 directory is still refused, as
    whoever can re-point the link chooses what runs."""
    hooks, out = dirs
    write_hook(hooks, "10-good", f"echo 10-good >> {out}/ran")
    link = hooks.parent / "hooks-link.d"
    os.symlink(hooks, link)
    assert directory_problem(str(hooks)) is None  # the target itself is fine
    with caplog.at_level(logging.WARNING, logger="linkwatch.sinks.hooks"):
        asyncio.run(HookSink(str(link), timeout=5).handle(change("UP", "DOWN")))
    assert ran(out) == []
    assert f"hook directory {link} refused: it is a symbolic link" in caplog.text
