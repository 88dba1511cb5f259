"""The documentation: the MkDocs site builds with --strict (no broken link or anchor, every page in the nav,
every included file present), and the README stays short with links that resolve inside the repository."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.helpers.cli import REPO

README_MAX_LINES = 250
# [text](target) outside code spans; the target stops at whitespace or ")".
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def test_site_builds_strict(tmp_path: Path) -> None:
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    site = tmp_path / "site"
    assert "Layers, lowest first" in (site / "architecture" / "index.html").read_text()  # ARCHITECTURE.md
    reference = (site / "reference" / "configuration" / "index.html").read_text()
    assert "ftlab:config-reference" not in reference
    assert "data.skip_bad_images" in reference and "param_groups.lr_decay" in reference


def test_readme_is_short() -> None:
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; at most {README_MAX_LINES}"


def test_readme_links_point_to_files_in_the_repository() -> None:
    text = (REPO / "README.md").read_text()
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # code blocks
    text = re.sub(r"`[^`\n]*`", "", text)  # code spans
    targets = LINK.findall(text)
    assert targets, "README.md links to nothing"
    root = REPO.resolve()

    def inside(target: str) -> bool:
        path = target.split("#", 1)[0]
        if not path or re.match(r"^[a-z][a-z0-9+.-]*:", target):  # an anchor alone, or a URL
            return False
        file = (REPO / path).resolve()
        return file.is_file() and file.is_relative_to(root)

    bad = [target for target in targets if not inside(target)]
    assert not bad, f"README.md links that are not files inside the repository: {bad}"
