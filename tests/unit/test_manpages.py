"""The manual pages linkwatch(8) and linkwatch.toml(5) are generated from the parser and the config
schema (linkwatch.commands.manpages), and the committed ones in packaging/man/ (which the Debian
package installs) are what the code renders now: they cannot go stale. groff and lexgrog, when
this machine has them, read them without a warning (lintian runs both)."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from linkwatch import commands as cli
from linkwatch.commands.manpages import EXAMPLE, bold, esc, pages
from linkwatch.config import key_docs, loads

ROOT = Path(__file__).resolve().parents[2]
MAN = ROOT / "packaging" / "man"
PAGES = pages()


def test_the_committed_pages_are_the_ones_the_code_renders():
    for name, text in PAGES.items():
        assert (MAN / name).read_text() == text, f"regenerate {name}: python scripts/gen-manpages.py"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen-manpages.py"), "--check"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in MAN.iterdir()) == sorted(PAGES)
    listed = (ROOT / "packaging" / "debian" / "linkwatch.manpages").read_text().split()
    assert listed == [f"packaging/man/{name}" for name in PAGES]


def _parsers(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def test_every_command_and_option_is_in_linkwatch_8():
    page = PAGES["linkwatch.8"]
    for parser in list(_parsers(cli.build_parser()))[1:]:
        assert f'.SS "{esc(parser.prog)}"' in page, f"linkwatch(8) has no section for {parser.prog}"
        section = page.split(f'.SS "{esc(parser.prog)}"', 1)[1].split(".SS", 1)[0]
        for action in parser._actions:
            for option in action.option_strings:
                if option not in ("-h", "--help"):
                    assert bold(option) in section, f"linkwatch(8): {parser.prog} {option} is missing"
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", "EXIT STATUS", "SIGNALS", "FILES", "SEE ALSO"):
        assert f"\n.SH {section}\n" in page


def test_every_key_is_in_linkwatch_toml_5_under_its_table():
    page = PAGES["linkwatch.toml.5"]
    for key in key_docs():
        section = page.split(f'.SS "{esc(key.table)}"\n', 1)[1].split(".SS", 1)[0]
        assert bold(key.path.rsplit(".", 1)[-1]) in section, f"linkwatch.toml(5) does not document {key.path}"


def test_the_example_in_linkwatch_toml_5_is_a_valid_config():
    config = loads(EXAMPLE, "linkwatch.toml(5) example")
    assert [u.name for u in config.uplinks] == ["fibre", "lte"]


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff is not installed (apt-get install groff-base)")
@pytest.mark.parametrize("name", sorted(PAGES))
def test_groff_reads_the_page_without_a_warning(name):
    env = dict(os.environ, LC_ALL="C.UTF-8")
    done = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", str(MAN / name)], capture_output=True,
                          text=True, env=env, timeout=60)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    if shutil.which("man"):  # as lintian reads it
        done = subprocess.run(["man", "--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z", str(MAN / name)],
                              capture_output=True, text=True, env=dict(env, MANROFFSEQ="", MANWIDTH="80"),
                              timeout=60)
        assert done.returncode == 0 and done.stderr == "", done.stderr


@pytest.mark.skipif(shutil.which("lexgrog") is None, reason="lexgrog is not installed (apt-get install man-db)")
@pytest.mark.parametrize("name", sorted(PAGES))
def test_lexgrog_finds_the_whatis_line(name):
    done = subprocess.run(["lexgrog", str(MAN / name)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f'"{name.rsplit(".", 1)[0]} - ' in done.stdout, done.stdout
