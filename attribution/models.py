"""Attribution runs and verdicts arrive with the attribution-engine issue; this app depends on ``tracing`` only."""

from __future__ import annotations
