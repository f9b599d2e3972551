"""Where the tests find the checkout and the recorded MTConnect data (`shared/` beside it)."""
from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data" / "mtconnect"
