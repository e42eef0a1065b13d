"""The web UI (`linkwatch web`): Flask app, login and CSRF, Prometheus metrics.

Templates and static files live in the repository's web/ folder, installed as the data package
``linkwatch.web``; :data:`WEB_DIR` finds them in either place.
"""

from __future__ import annotations

import importlib.util
import os


def _web_dir() -> str:
    spec = importlib.util.find_spec("linkwatch.web")
    if spec is not None and spec.submodule_search_locations:
        return list(spec.submodule_search_locations)[0]
    # a source tree on PYTHONPATH without an install: web/ sits beside the linkwatch package
    return os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "web")


WEB_DIR = _web_dir()
