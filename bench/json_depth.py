"""``check_json_depth`` on 1 MB of hostile and ordinary JSON: the depth check runs inside the OTLP request, so it must
stay linear. Prints the median ms per input. Usage: python bench/json_depth.py"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from tracing.formats.base import TraceFormatError, check_json_depth  # noqa: E402

MB = 1024 * 1024
ROUNDS = 5
INPUTS = {
    # The red-team input: an unterminated string of escaped quotes (quadratic with the old regex: 11 s for 60 KB).
    "unterminated escaped quotes": '{"x": "' + '\\"' * (MB // 2),
    "the same ending in a lone backslash": '{"x": "' + '\\"' * (MB // 2) + "\\",
    "a million quotes": '"' * MB,
    "a million brackets, shallow": "[]" * (MB // 2),
    "ordinary records": json.dumps(
        [{"role": "agent", "content": "lorem ipsum " * 8, "n": [1, 2]}] * (MB // 140)
    ),
}


def _median_ms(text: str) -> float:
    samples = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        try:
            check_json_depth(text)
        except TraceFormatError:
            pass
        samples.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(samples), 1)


if __name__ == "__main__":
    for name, text in INPUTS.items():
        print(f"{name:40} {len(text) / MB:5.2f} MB {_median_ms(text):8.1f} ms")
