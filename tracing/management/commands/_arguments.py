"""Argument types shared by the commands: a number out of range is refused in one line, before anything is written.

``type=`` checks what a person types; ``call_command``'s keyword options skip it, so a command also passes its
options through ``check_options`` at the start of ``handle``."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from typing import Any

from django.core.management.base import CommandError


def whole(low: int, high: int) -> Callable[[Any], int]:
    """A whole number from ``low`` to ``high``."""

    def parse(value: Any) -> int:
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
        if not low <= number <= high:
            raise argparse.ArgumentTypeError(f"must be between {low:,} and {high:,}, not {number:,}")
        return number

    return parse


def check_options(options: dict[str, Any], checked: Mapping[str, Callable[[Any], Any]]) -> None:
    """Parse each option named in ``checked`` (those given, not None) again; CommandError naming the option."""
    for name, parse in checked.items():
        if options.get(name) is not None:
            try:
                options[name] = parse(options[name])
            except argparse.ArgumentTypeError as exc:
                raise CommandError(f"--{name.replace('_', '-')}: {exc}") from None
