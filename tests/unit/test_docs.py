"""Tests that keep the docs honest: every CLI command and lab subcommand is documented in the
README, the README's quick-start commands exist, and the sample config documents every key."""

from pathlib import Path

from linkwatch import commands as cli
from linkwatch.config import describe_keys

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_every_command_is_documented():
    for name in cli.COMMANDS:
        assert f"linkwatch {name}" in README, f"README does not document `linkwatch {name}`"


def test_every_command_is_in_the_parser_and_the_other_way_round():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) == set(cli.COMMANDS)


def test_every_command_is_registered_with_its_help_from_COMMANDS():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert {a.dest: a.help for a in sub._choices_actions} == cli.COMMANDS


def test_every_lab_subcommand_is_documented():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    lab = sub.choices["lab"]
    lab_sub = next(a for a in lab._actions if getattr(a, "choices", None) and "up" in a.choices)
    for name in lab_sub.choices:
        assert name in README.split("linkwatch lab", 1)[1], f"README does not document `linkwatch lab {name}`"


def test_quick_start_scripts_exist_and_ci_runs_the_test_command():
    head = README.split("## Measured")[0]
    for script in ("scripts/demo.sh", "scripts/test.sh"):
        assert script in head
        assert (ROOT / script).exists()
    assert "scripts/test.sh" in (ROOT / ".ci" / "run").read_text()


def test_sample_config_mentions_every_key():
    sample = (ROOT / "etc" / "linkwatch.toml").read_text()
    for key in describe_keys():
        leaf = key.rsplit(".", 1)[-1]
        assert f"{leaf} =" in sample, f"etc/linkwatch.toml does not show {key}"


def test_configuration_reference_is_generated_from_the_schema_and_up_to_date():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen-config-doc.py"), "--check"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    reference = (ROOT / "docs" / "configuration.md").read_text()
    for key in describe_keys():
        assert f"`{key}`" in reference, f"docs/configuration.md does not document {key}"


def test_every_command_has_help(capsys):
    import pytest

    for name in cli.COMMANDS:
        with pytest.raises(SystemExit) as done:
            cli.main([name, "--help"])
        assert done.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith(f"usage: linkwatch {name}"), out[:100]


def test_toml_examples_in_the_docs_are_valid_configs():
    import re

    from linkwatch.config import loads

    checked = 0
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for block in re.findall(r"```toml\n(.*?)```", doc.read_text(), re.S):
            if "[uplinks." in block:  # a whole config (fragments without uplinks are shown as snippets)
                loads(block, f"{doc.name} example")
                checked += 1
    assert checked >= 1


def test_docs_are_linked_from_the_readme():
    for name in ("install.md", "operations.md", "troubleshooting.md", "configuration.md", "snmp.md"):
        assert (ROOT / "docs" / name).exists()
        assert f"docs/{name}" in README, f"README does not link docs/{name}"


def _quick_start_commands() -> list[str]:
    import re

    block = re.search(r"## Try it.*?```sh\n(.*?)```", README, re.S).group(1)
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.split("#", 1)[0].strip()]


def test_the_quick_start_commands_work_as_written_in_a_root_shell_without_sudo(tmp_path):
    """A fresh Debian machine where one is root often has no sudo: the README's two commands must
    not need it, and nothing they run may call it."""
    import os
    import subprocess

    commands = _quick_start_commands()
    assert len(commands) == 2, commands
    listing = subprocess.run(["git", "ls-files", "-s", "scripts"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.splitlines()
    modes = {line.split("\t")[1]: line.split()[0] for line in listing}  # "100755 <sha> 0\tscripts/x.sh"
    for command in commands:
        assert "sudo" not in command.split(), f"README quick start needs sudo: {command}"
        script = command.split()[0]
        assert script.startswith("./scripts/"), command
        path = script[2:]
        assert modes.get(path) == "100755", f"{path} is not executable in git: `{command}` would fail"
        assert (ROOT / path).read_text().startswith("#!"), path
    for script in ("scripts/demo.sh", "scripts/test.sh", "scripts/bootstrap.sh", "scripts/fetch-ietf-mibs.sh"):
        assert "sudo" not in (ROOT / script).read_text().split(), f"{script} calls sudo"
    if not (ROOT / ".venv" / ".linkwatch-installed").exists():
        return  # not bootstrapped here: the static checks above are what can be said
    trap = tmp_path / "bin"
    trap.mkdir()
    (trap / "sudo").write_text("#!/bin/sh\necho 'sudo called' >&2\nexit 97\n")
    (trap / "sudo").chmod(0o755)
    env = dict(os.environ, PATH=f"{trap}:{os.environ['PATH']}")
    done = subprocess.run(f"{commands[0]} --help", shell=True, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and "sudo called" not in done.stderr, done.stderr[-2000:]
    assert "usage: linkwatch lab demo" in done.stdout


def test_every_documented_default_is_what_the_key_accepts_and_means_the_default():
    """The reference (docs/configuration.md, linkwatch.toml(5)) shows each default as TOML; read
    back through the key's own converter it must give the default itself: a file mode shown as
    the decimal 432 would be refused ("quote it"), so status_mode and mode show "0660"."""
    import dataclasses
    import tomllib

    from linkwatch.config.reference import _default_text
    from linkwatch.config.values import ABSENT, ARRAY, CONV, NAMED, TABLE, Config

    checked = []

    def walk(cls, prefix):
        for f in dataclasses.fields(cls):
            meta = f.metadata
            if CONV in meta:
                shown = _default_text(f)
                if shown in ("required", "unset"):
                    continue
                value = f.default if f.default is not dataclasses.MISSING else meta.get(ABSENT)
                if value in ("", ()):  # "not given" (a rule's name, its empty match lists): nothing to write
                    continue
                raw = tomllib.loads(f"v = {shown}")["v"]
                assert meta[CONV](raw) == value, (prefix + f.name, shown)
                checked.append(prefix + f.name)
            elif TABLE in meta:
                walk(meta[TABLE], f"{prefix}{f.name}.")
            elif NAMED in meta or ARRAY in meta:
                walk(meta.get(NAMED) or meta.get(ARRAY), f"{prefix}{f.name}.*.")

    walk(Config, "")
    assert "control.status_mode" in checked and "control.mode" in checked
