"""The package type-checks clean: mypy, configured in pyproject.toml, finds no error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_the_package_type_checks_clean() -> None:
    # No arguments: mypy checks the files and uses the settings of [tool.mypy].
    result = subprocess.run([sys.executable, "-m", "mypy"], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, f"mypy found errors:\n{result.stdout}{result.stderr}"
