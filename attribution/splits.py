"""A fixed development / held-out split of every labelled collection.

Methods are designed and tuned on ``dev`` traces only; ``heldout`` figures are the honest ones. The split depends
only on a trace's identity in its collection (source format + external id, else name), so it is the same on every
machine, in every project, and for every re-import of the same data.
"""

from __future__ import annotations

import hashlib

HELDOUT_PERCENT = 30  # of each collection, chosen by hash: about 37 of Who&When's 123 files


def split_of(*, source_format: str, external_id: str, name: str) -> str:
    key = f"{source_format}:{external_id or name}".encode()
    bucket = int(hashlib.sha256(key).hexdigest()[:8], 16) % 100
    return "heldout" if bucket < HELDOUT_PERCENT else "dev"
