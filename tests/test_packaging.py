"""The tests exercise the installed package, and the package holds everything it needs at run time."""

from __future__ import annotations

import importlib.metadata
import json
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

import selfinstruct


def test_tests_import_the_installed_package():
    """A stale install elsewhere (another clone, an old wheel) would make every other test check the wrong code."""
    root = Path(__file__).resolve().parents[1]
    # the install, not the source tree's own egg-info that `python -m pytest` finds through the working directory
    installed = [p for p in sys.path if p and Path(p).resolve() != root]
    dists = list(importlib.metadata.distributions(name="selfinstruct", path=installed))
    assert dists, "selfinstruct is not installed: pip install -e ."
    dist = dists[0]
    assert dist.version == selfinstruct.__version__
    here = Path(selfinstruct.__file__).resolve().parent
    direct = dist.read_text("direct_url.json")
    if direct and json.loads(direct).get("dir_info", {}).get("editable"):
        source = Path(unquote(urlparse(json.loads(direct)["url"]).path)).resolve()
        assert here == source / "selfinstruct", f"imported {here}, but the editable install points at {source}"
    else:
        files = {str(f) for f in dist.files or []}
        assert "selfinstruct/__init__.py" in files and here == Path(dist.locate_file("selfinstruct")).resolve()
