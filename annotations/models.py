"""Review queues and dataset export arrive with the review-queue issue; this app depends on ``attribution``."""

from __future__ import annotations
