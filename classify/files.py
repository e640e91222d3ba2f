"""Files written once: under a temporary name, synced, then linked into place, so none is ever overwritten or seen
half-written (curate's workspace stores its originals this way, the demo's feedback its photos)."""
from __future__ import annotations

import os
import threading
from pathlib import Path


def write_new(target: Path, data: bytes) -> bool:
    """Write `data` to `target` unless it exists; True if this call wrote it. Raises OSError (disk full, read-only,
    permissions), leaving nothing behind. Safe against other threads and processes writing the same name."""
    target = Path(target)
    if target.exists():
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".tmp-{os.getpid()}-{threading.get_ident()}-{target.name}")
    try:
        with open(tmp, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.link(tmp, target)  # fails rather than overwrite
        return True
    except FileExistsError:  # another writer linked the same name a moment ago
        return False
    finally:
        tmp.unlink(missing_ok=True)
