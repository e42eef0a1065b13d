"""Write the manual pages packaging/man/linkwatch.8 and packaging/man/linkwatch.toml.5 from the
argparse parser and the config schema (linkwatch.commands.manpages).

    .venv/bin/python scripts/gen-manpages.py          # rewrite the pages
    .venv/bin/python scripts/gen-manpages.py --check  # exit 1 if one is out of date

tests/unit/test_manpages.py fails when a page is out of date, so a new option or key cannot be
left out of the manual. The Debian package installs the pages (debian/linkwatch.manpages).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from linkwatch.commands.manpages import pages  # noqa: E402

OUT = ROOT / "packaging" / "man"


def main(argv: list[str]) -> int:
    stale = []
    for name, text in pages().items():
        path = OUT / name
        if "--check" in argv:
            if not path.exists() or path.read_text() != text:
                stale.append(path)
            continue
        OUT.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path}")
    for path in stale:
        print(f"{path} is out of date: run .venv/bin/python scripts/gen-manpages.py", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
