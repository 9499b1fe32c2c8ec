"""Shared pytest setup: make tests/ importable so support modules can be shared."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
