"""The config file gives away the hook directory (and with it the engine's capabilities) and holds
the password hash and SNMP keys: `linkwatch passwd` tightens its mode, and a config that others
can write (or read, when it holds secrets) is warned about (issue 14, item 9)."""

from __future__ import annotations

import io
import logging

import pytest

from linkwatch.commands import main
from tests.unit.test_web import BASE

PASSWORD = "a long enough password"


@pytest.mark.parametrize("before, after", [(0o666, 0o640), (0o644, 0o640), (0o660, 0o640), (0o640, 0o640),
                                           (0o600, 0o600)])
def test_passwd_takes_away_what_others_may_do_with_the_config(tmp_path, monkeypatch, capsys, before, after):
    path = tmp_path / "lw.toml"
    path.write_text(BASE)
    path.chmod(before)
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert main(["passwd", "--config", str(path)]) == 0
    assert path.stat().st_mode & 0o777 == after
    out = capsys.readouterr().out
    assert (f"mode {before:04o} -> {after:04o}" in out) == (before != after)


def test_check_config_warns_about_a_config_others_can_write(tmp_path, capsys):
    path = tmp_path / "lw.toml"
    path.write_text(BASE)
    path.chmod(0o666)
    assert main(["check-config", str(path)]) == 0  # a warning, not a refusal: it still works
    err = capsys.readouterr().err
    assert "warning:" in err and "writable by others (mode 0666)" in err and "[hooks] directory" in err
    path.chmod(0o640)
    assert main(["check-config", str(path)]) == 0
    assert "warning" not in capsys.readouterr().err


def test_a_readable_config_with_secrets_is_warned_about(tmp_path, capsys):
    path = tmp_path / "lw.toml"
    path.write_text(BASE)
    path.chmod(0o644)
    assert main(["check-config", str(path)]) == 0
    assert "warning" not in capsys.readouterr().err  # nothing secret in it
    path.write_text('[snmp.agent]\ncommunity = "s3cret-community"\n' + BASE)
    assert main(["check-config", str(path)]) == 0
    err = capsys.readouterr().err
    assert "readable by everyone (mode 0644)" in err and "s3cret" not in err


def test_the_engine_and_the_web_ui_log_the_warning(tmp_path, caplog):
    from argparse import Namespace

    from linkwatch.commands.common import load_and_log

    path = tmp_path / "lw.toml"
    path.write_text(BASE)
    path.chmod(0o646)
    with caplog.at_level(logging.WARNING):
        assert load_and_log(Namespace(config=str(path), log_level="info")) is not None
    assert "writable by others (mode 0646)" in caplog.text
