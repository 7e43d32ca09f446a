"""Encryption at rest for provider API keys (Fernet, AES-128-CBC + HMAC-SHA256).

Keys come from ``CULPRIT_FERNET_KEYS`` (or the file named by ``CULPRIT_FERNET_KEYS_FILE``): comma-separated, the first
one encrypts and every one decrypts, so rotating is "put a new key first, keep the old ones until ``rotate`` has
re-encrypted every stored value". With no key configured (the embedded single-user mode) a key is generated once into
``<VAR_DIR>/fernet.key``, readable by its owner only. No function here logs or returns a key.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

ENV_KEYS = "CULPRIT_FERNET_KEYS"
KEY_FILE_NAME = "fernet.key"


class DecryptionError(ValueError):
    """A stored value no configured key opens: the key was rotated away, or the value is not ours."""


def encrypt(text: str) -> str:
    return _fernet().encrypt(text.encode()).decode("ascii")


def decrypt(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode("ascii")).decode()
    except (InvalidToken, UnicodeEncodeError) as exc:
        raise DecryptionError(
            f"the stored secret cannot be decrypted with the configured keys ({ENV_KEYS}); "
            "was a key removed before every value was rotated? Enter the secret again."
        ) from exc


def rotate(token: str) -> str:
    """Re-encrypt a stored value with the first key (after a new key was put first)."""
    try:
        return _fernet().rotate(token.encode("ascii")).decode("ascii")
    except InvalidToken as exc:
        raise DecryptionError("the stored secret cannot be decrypted with the configured keys") from exc


def _configured_keys() -> str:
    if path := os.environ.get(f"{ENV_KEYS}_FILE"):
        return Path(path).read_text().strip()
    return os.environ.get(ENV_KEYS, "").strip()


def _fernet() -> MultiFernet:
    # Cached per configuration so a test (or a restarted process) that changes the keys gets a matching instance.
    return _build(_configured_keys(), str(settings.VAR_DIR))


@functools.lru_cache(maxsize=4)
def _build(configured: str, var_dir: str) -> MultiFernet:
    keys = [k.strip() for k in configured.split(",") if k.strip()] or [_local_key(Path(var_dir))]
    fernets = []
    for position, key in enumerate(keys, start=1):
        try:
            fernets.append(Fernet(key))
        except (ValueError, TypeError):
            # The message names the position only: the value itself is a secret.
            raise ImproperlyConfigured(
                f"{ENV_KEYS}: key {position} is not a valid Fernet key (32 url-safe base64-encoded bytes)"
            ) from None
    return MultiFernet(fernets)


def _local_key(var_dir: Path) -> str:
    """The embedded mode's key: created once, atomically, mode 600 from the first byte on."""
    path = var_dir / KEY_FILE_NAME
    if path.exists():
        return path.read_text().strip()
    var_dir.mkdir(parents=True, exist_ok=True)
    tmp = var_dir / f".{KEY_FILE_NAME}.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(Fernet.generate_key().decode("ascii"))
    try:
        # link() fails when the file exists: of two processes starting at once, the first key wins and the other
        # process reads it, so no value is ever encrypted with a key that is then thrown away.
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return path.read_text().strip()
