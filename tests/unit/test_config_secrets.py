"""A password put in the place of its hash never reaches an error message, and so never the
journal (issue 14, item 10)."""

from __future__ import annotations

import pytest

from linkwatch.commands import main
from linkwatch.config import ConfigError, loads
from tests.unit.test_web import BASE

PLAIN = "Tr0ub4dor&3-horse"


@pytest.mark.parametrize("value", [f'"{PLAIN}"', f'"scrypt:{PLAIN}"', f'["{PLAIN}"]'])
def test_a_plaintext_password_in_password_hash_is_not_echoed(value):
    with pytest.raises(ConfigError) as e:
        loads(f"[web]\npassword_hash = {value}\n{BASE}")
    text = str(e.value)
    assert "web.password_hash" in text and "linkwatch passwd" in text
    assert "Tr0ub4dor" not in text


def test_check_config_and_the_engine_do_not_print_it(tmp_path, capsys):
    path = tmp_path / "lw.toml"
    path.write_text(f'[web]\npassword_hash = "{PLAIN}"\n{BASE}')
    path.chmod(0o600)
    assert main(["check-config", str(path)]) == 2
    assert main(["web", "--config", str(path)]) == 2
    captured = capsys.readouterr()
    assert "web.password_hash" in captured.err and "Tr0ub4dor" not in captured.err + captured.out
