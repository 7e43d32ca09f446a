"""API tokens: created once (the secret is shown to the person then, never again), found by prefix, revocable."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from django.contrib.auth.models import AbstractBaseUser
from django.utils import timezone

from ..models import ApiToken, Project
from .audit import audit_record

TOKEN_PREFIX = "cul_"  # noqa: S105 - the public prefix of every token, not a secret


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def api_token_create(*, project: Project, name: str, user: AbstractBaseUser | None) -> tuple[ApiToken, str]:
    """Returns the row and the plain token, which is not stored anywhere."""
    prefix = secrets.token_hex(4)
    token = f"{TOKEN_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    row = ApiToken.objects.create(
        project=project,
        name=name.strip()[:100] or "token",
        prefix=prefix,
        token_hash=_hash(token),
        created_by=user,
    )
    audit_record(
        action="token.created", project=project, actor=user, target=row.name, details={"prefix": prefix}
    )
    return row, token


def api_token_authenticate(token: str) -> ApiToken | None:
    """The live token row for ``token``, or None. Constant-time comparison of the hash."""
    if not token.startswith(TOKEN_PREFIX) or token.count("_") < 2:
        return None
    prefix = token[len(TOKEN_PREFIX) :].split("_", 1)[0]
    row = ApiToken.objects.select_related("project").filter(prefix=prefix, revoked_at__isnull=True).first()
    if row is None or not hmac.compare_digest(row.token_hash, _hash(token)):
        return None
    # Written at most once a minute per token: a busy exporter must not turn every request into a row update.
    now = timezone.now()
    if row.last_used_at is None or (now - row.last_used_at).total_seconds() > 60:
        ApiToken.objects.filter(pk=row.pk).update(last_used_at=now)
    return row


def api_token_revoke(*, token: ApiToken, actor: AbstractBaseUser | None = None) -> None:
    if ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now()):
        audit_record(
            action="token.revoked",
            project=token.project,
            actor=actor,
            target=token.name,
            details={"prefix": token.prefix},
        )
