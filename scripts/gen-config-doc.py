"""Write docs/configuration.md from the config schema (linkwatch.config.key_docs).

    .venv/bin/python scripts/gen-config-doc.py          # rewrite the file
    .venv/bin/python scripts/gen-config-doc.py --check  # exit 1 if it is out of date

tests/unit/test_docs.py fails when the file is out of date, so a new key cannot go undocumented.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from linkwatch.config import key_docs  # noqa: E402

OUT = ROOT / "docs" / "configuration.md"

HEAD = """# Configuration reference

Generated from the schema (`linkwatch/config/values.py`) by `scripts/gen-config-doc.py`; the sample
`etc/linkwatch.toml` shows every key with comments. `linkwatch check-config FILE` reports every
error at once, each with its key path, the bad value and what was expected.

Value forms: durations `"200ms"`, `"1s"`, `"2m"`, `"1h"`, `"30d"` (or a plain number of seconds);
percentages `40`, `40.0` or `"40%"`. Unknown keys are errors. `*` stands for a name
(`[uplinks.NAME]`, `[snmp.users.NAME]`) or an entry of an array of tables (`[[...probes]]`,
`[[snmp.traps]]`). Every `[health]` key can also be set per uplink in `[uplinks.NAME.health]`.
Secrets (`password_hash`, communities, `auth_key`, `priv_key`) are never logged or shown.
"""


def render() -> str:
    lines = [HEAD]
    section = None
    for k in key_docs():
        top = k.path.split(".")[0]
        if top != section:
            section = top
            lines += ["", f"## [{top}]" if top != "uplinks" else "## [uplinks.NAME]", "",
                      "| key | default | meaning | accepted values |", "|---|---|---|---|"]
        cell = [f"`{k.path}`", f"`{k.default}`" if k.default not in ("required", "unset") else k.default,
                k.doc, k.expected]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cell) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    text = render()
    if "--check" in sys.argv[1:]:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is out of date: run .venv/bin/python scripts/gen-config-doc.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
