"""Where the tests find the checkout, the recorded MTConnect documents and the replay data.

Everything the tests read is inside the repository: the recorded documents in
`tests/data/mtconnect/` (origins and licences in its README.md) and the recorded NIST days
that the replay agent serves in `resources/replay/`.
"""
from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
RECORDED_DATA = REPO_ROOT / "tests" / "data" / "mtconnect"
REPLAY_DATA = REPO_ROOT / "resources" / "replay"
