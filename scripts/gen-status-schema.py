"""Write docs/status.schema.json from the status dataclasses (linkwatch.core.status.json_schema).

`python scripts/gen-status-schema.py` rewrites it; `--check` exits 1 when it is out of date (a test
runs that), so the published schema always matches what the engine sends.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from linkwatch.core.status import json_schema  # noqa: E402

TARGET = Path(__file__).resolve().parents[1] / "docs" / "status.schema.json"


def main(argv: list[str]) -> int:
    text = json.dumps(json_schema(), indent=2) + "\n"
    if "--check" in argv:
        if not TARGET.exists() or TARGET.read_text() != text:
            print(f"{TARGET} is out of date: run python scripts/gen-status-schema.py", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text)
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
