"""The user guide builds as a site with no warning (a broken link, a missing anchor or a page left out
of the navigation fails it); README stays a front door; the repository speaks of dates and commits,
not of sittings ("session" only where it means a pytest session)."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import ROOT


def test_guide_builds_strict(tmp_path):
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert (tmp_path / "site" / "guide" / "selection" / "index.html").is_file()


def test_readme_is_short():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250


# the only files where the word may appear: pytest's own session (hooks, fixture scopes)
PYTEST_SESSION = {"tests/conftest.py", "tests/unit/test_ci_skips.py", "tests/unit/test_docs.py"}


def test_no_sessions_outside_pytest():
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    found = []
    for name in files:
        if name in PYTEST_SESSION or not name.endswith((".py", ".md", ".yaml", ".yml", ".toml", ".sh", ".txt")):
            continue
        text = (ROOT / name).read_text(encoding="utf-8", errors="replace")
        found += [f"{name}: {m.group(0)}" for m in re.finditer(r"(?i)\bsessions?\b", text)]
    assert not found
