"""Build a small datastore in its own process (the crash tests SIGKILL it at chosen moments).
Usage: crash_build_script.py WARMUP_DIR DATASTORE_DIR"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from less_hf import build_datastore  # noqa: E402

from reliability_helpers import CRASH_GRAD, CRASH_PROJ, crash_pool  # noqa: E402

if __name__ == "__main__":
    warmup_dir, datastore_dir = sys.argv[1:3]
    build_datastore(warmup_dir, crash_pool(), datastore_dir, CRASH_GRAD, CRASH_PROJ)
