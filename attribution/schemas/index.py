"""Finding the schemas a trace may match, fast: a structured filter, an offline lexical index, optional embeddings,
a similarity floor, and a Redis hot cache keyed by the trace's fingerprint.

- Structured filter: trusted schemas only (a candidate is never retrieved, whatever its text says), of the trace's
  style, from the project itself, plus the shared library when the project opted in (per-project isolation is the
  default).
- Lexical index: posting lists over the schemas' words, in process memory (``LexicalIndex``), the same on PostgreSQL
  and on SQLite (embedded mode); rebuilt when a schema write bumps the generation. The PostgreSQL full-text column
  (migration 0004) serves the schema list's search box.
- Embeddings: when ``CULPRIT_SCHEMA_EMBEDDING_MODEL`` names a litellm embedding model, the lexical candidates are
  re-ranked by the mean of word overlap and cosine similarity. Off by default: nothing leaves the machine.
- Floor: a schema whose similarity is below ``SIMILARITY_FLOOR`` is not returned at all.
- Hot cache: the answer for a fingerprint (project, the generation counters of the project and the library, style,
  terms) is kept in Redis for an hour. Every schema write bumps the generation, so a cached answer never outlives a
  change; a Redis that is down only costs speed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import time
from typing import Any

import numpy as np
import redis
from django.conf import settings

from ..models import ErrorSchema, SchemaExemplar, SchemaLibrarySettings, SchemaScope, SchemaStatus
from .features import Query

logger = logging.getLogger(__name__)

# Below this share of a schema's words found in the trace, the schema is not returned. A schema's words are its
# role, kind, primary-signal and signal tags plus its phrases; half of them is "the same kind of step failing the
# same way". Chosen a priori, not tuned on any split.
SIMILARITY_FLOOR = 0.5
# Lexical candidates ranked before the floor and the leave-one-out filter: enough for a trace matching many
# schemas, small enough that re-ranking stays under a millisecond.
CANDIDATES = 40
# Returned after re-ranking.
TOP_K = 8
HOT_TTL_SECONDS = 3600
CARD_TTL_SECONDS = 7 * 24 * 3600
_PREFIX = "culprit:schemas:v1:"


def key(kind: str, suffix: object) -> str:
    """A Redis key of this database's schema cache. The database's name is part of it: ids restart in every
    database, so two installations (or a test database and a dev one) sharing a Redis must never read each other's
    generations, answers or cards."""
    return f"{_PREFIX}{_database_tag()}:{kind}:{suffix}"


@functools.lru_cache(maxsize=1)
def _database_tag() -> str:
    db = settings.DATABASES["default"]
    return hashlib.sha256(f"{db.get('HOST', '')}:{db.get('PORT', '')}/{db['NAME']}".encode()).hexdigest()[:12]


# --- Redis ------------------------------------------------------------------------------------------------------------


def redis_url() -> str:
    """``CULPRIT_SCHEMA_CACHE_URL``, else the LLM cache's URL (``CULPRIT_LLM_CACHE_URL``, itself defaulting to the
    broker when it is Redis). "off" disables the hot cache."""
    url = os.environ.get("CULPRIT_SCHEMA_CACHE_URL") or getattr(settings, "CULPRIT_LLM_CACHE_URL", "") or ""
    if url.strip().lower() in {"off", "none", "false", "0"}:
        return ""
    if not url:
        broker = str(getattr(settings, "CELERY_BROKER_URL", "") or "")
        url = broker if broker.startswith(("redis://", "rediss://")) else ""
    return url


@functools.lru_cache(maxsize=4)
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)


def hot_cache() -> redis.Redis | None:
    url = redis_url()
    return _client(url) if url else None


def bump_generation(
    project_id: int, *, shared: bool = False, schema_ids: list[int] | tuple[int, ...] = ()
) -> None:
    """Invalidate every cached answer of the project (and of every project, for a shared-library change), and the
    cached cards of the schemas that changed."""
    cache = hot_cache()
    if cache is None:
        return
    try:
        with cache.pipeline(transaction=False) as pipe:
            pipe.incr(key("gen", project_id))
            if shared:
                pipe.incr(key("gen", "shared"))
            for pk in schema_ids:
                pipe.delete(key("card", pk))
            pipe.execute()
    except redis.RedisError as exc:
        logger.warning("schema cache generation bump failed: %s", type(exc).__name__)


def fingerprint(project_id: int, query: Query, generations: tuple[bytes | None, bytes | None]) -> str:
    material = json.dumps(
        [project_id, [g.decode() if g else "0" for g in generations], query.style, list(query.terms)]
    )
    return key("hot", hashlib.sha256(material.encode()).hexdigest())


# --- retrieval --------------------------------------------------------------------------------------------------------


def retrieve(*, project_id: int, query: Query, use_cache: bool = True) -> tuple[list[dict[str, Any]], bool]:
    """The trusted schemas similar enough to ``query``, best first, as plain dicts (see ``load_cards``); and whether the
    answer came from the hot cache."""
    cache = hot_cache() if use_cache else None
    hot_key = None
    if cache is not None:
        try:
            generations = tuple(cache.mget(key("gen", project_id), key("gen", "shared")))
            hot_key = fingerprint(project_id, query, generations)
            raw = cache.get(hot_key)
            if raw:
                return json.loads(raw), True
        except (redis.RedisError, ValueError) as exc:
            logger.warning("schema hot cache read failed: %s", type(exc).__name__)
            cache = None
    found = _search(project_id=project_id, query=query)
    if cache is not None and hot_key is not None:
        try:
            cache.set(hot_key, json.dumps(found), ex=HOT_TTL_SECONDS)
        except redis.RedisError as exc:
            logger.warning("schema hot cache write failed: %s", type(exc).__name__)
    return found, False


def _search(*, project_id: int, query: Query) -> list[dict[str, Any]]:
    found = lexical_index(project_id)
    scored = found.search(query, CANDIDATES)
    if embedding_model() and scored:
        scored = _with_embeddings(scored, query, project_id)
    kept = sorted(((s, pk) for s, pk in scored if s >= SIMILARITY_FLOOR), key=lambda x: (-x[0], x[1]))[:TOP_K]
    cards = found.cards([pk for _, pk in kept])
    return [cards[pk] | {"similarity": round(s, 4)} for s, pk in kept if pk in cards]


class LexicalIndex:
    """Posting lists over the trusted schemas a project may read, one set per style (the structured filter): for
    each word, the positions of the schemas that have it. A query's overlap with every schema is one ``bincount``
    over the postings of its words, so the cost follows the postings touched; the similarity is the share of a
    schema's words the query has (``features.similarity``). The cards of schemas already returned are kept with the
    index (both are dropped together when a write bumps the generation).

    PostgreSQL's full-text index was measured first and ranked too slowly for this query shape: a trace's terms
    (dozens, OR-ed) match most schemas, and ``ts_rank`` over 25,000 matches took 300-700 ms at 50,000 schemas."""

    def __init__(self, rows: list[tuple[int, str, str]]) -> None:
        self.by_style: dict[str, tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]] = {}
        for style in {r[1] for r in rows}:
            mine = [r for r in rows if r[1] == style]
            vocabulary: dict[str, list[int]] = {}
            sizes = []
            for position, (_, _, text) in enumerate(mine):
                words = set(text.split())
                sizes.append(max(1, len(words)))
                for word in words:
                    vocabulary.setdefault(word, []).append(position)
            self.by_style[style] = (
                np.array([r[0] for r in mine], dtype=np.int64),
                1.0 / np.array(sizes, dtype=np.float64),
                {w: np.array(p, dtype=np.int32) for w, p in vocabulary.items()},
            )
        self._cards: dict[int, dict[str, Any]] = {}

    def search(self, query: Query, limit: int) -> list[tuple[float, int]]:
        if query.style not in self.by_style:
            return []
        ids, inverse, postings = self.by_style[query.style]
        lists = [postings[t] for t in set(query.terms) if t in postings]
        if not lists:
            return []
        score = np.bincount(np.concatenate(lists), minlength=len(ids)) * inverse
        keep = np.flatnonzero(score >= SIMILARITY_FLOOR)
        if len(keep) > limit:
            keep = keep[np.argpartition(-score[keep], limit - 1)[:limit]]
        return [(float(score[i]), int(ids[i])) for i in keep]

    def cards(self, ids: list[int]) -> dict[int, dict[str, Any]]:
        missing = [pk for pk in ids if pk not in self._cards]
        if missing:
            self._cards.update(cached_cards(missing))
        return {pk: self._cards[pk] for pk in ids if pk in self._cards}


# Indexes kept per process: project -> (generations, built at, index). Rebuilt when a schema write bumped
# a generation, or after INDEX_MAX_AGE seconds when Redis cannot tell (a change then shows within a minute).
_INDEXES: dict[int, tuple[Any, float, LexicalIndex]] = {}
INDEX_MAX_AGE = 60.0


def lexical_index(project_id: int) -> LexicalIndex:
    generations = _generations(project_id)
    cached = _INDEXES.get(project_id)
    fresh = cached is not None and (
        cached[0] == generations if generations is not None else time.monotonic() - cached[1] < INDEX_MAX_AGE
    )
    if cached is not None and fresh:
        return cached[2]
    from django.db.models import Q

    shared = SchemaLibrarySettings.objects.filter(project_id=project_id, use_shared_library=True).exists()
    scope = Q(project_id=project_id) | Q(scope=SchemaScope.SHARED) if shared else Q(project_id=project_id)
    rows = list(
        ErrorSchema.objects.filter(scope, status=SchemaStatus.TRUSTED).values_list(
            "pk", "style", "search_text"
        )
    )
    built = LexicalIndex(rows)
    if len(_INDEXES) > 16:
        _INDEXES.clear()
    _INDEXES[project_id] = (generations, time.monotonic(), built)
    return built


def _generations(project_id: int) -> tuple[Any, Any] | None:
    cache = hot_cache()
    if cache is None:
        return None
    try:
        return tuple(cache.mget(key("gen", project_id), key("gen", "shared")))
    except redis.RedisError:
        return None


def cached_cards(ids: list[int]) -> dict[int, dict[str, Any]]:
    """Cards from the Redis card store, read through to the database for the ones it lacks. A card is deleted
    whenever its schema changes (``bump_generation``), so a stored card is never stale; measured at 50,000 schemas
    on a loaded 2-core machine, the database read was the slow tail of a retrieval (p95 16 ms against 0.5 ms)."""
    cache = hot_cache()
    found: dict[int, dict[str, Any]] = {}
    if cache is not None:
        try:
            for pk, raw in zip(ids, cache.mget([key("card", pk) for pk in ids]), strict=True):
                if raw:
                    found[pk] = json.loads(raw)
        except (redis.RedisError, ValueError) as exc:
            logger.warning("schema card cache read failed: %s", type(exc).__name__)
            cache = None
    missing = [pk for pk in ids if pk not in found]
    if missing:
        loaded = load_cards(missing)
        found.update(loaded)
        if cache is not None and loaded:
            try:
                with cache.pipeline(transaction=False) as pipe:
                    for pk, card in loaded.items():
                        pipe.set(key("card", pk), json.dumps(card), ex=CARD_TTL_SECONDS)
                    pipe.execute()
            except redis.RedisError as exc:
                logger.warning("schema card cache write failed: %s", type(exc).__name__)
    return found


def load_cards(ids: list[int]) -> dict[int, dict[str, Any]]:
    """What the method needs of each schema, JSON-ready for the hot cache: the exemplars' features go along so
    leave-one-out can rebuild a schema without the trace being attributed. One query (exemplars joined to their
    schema): every schema is born from a case, so none lacks an exemplar."""
    # Counters (hits, misses) are left out: they move on every settled use, and the cards would go stale.
    fields = (
        "title",
        "category",
        "context",
        "detection",
        "detection_text",
        "search_text",
        "approved_by_id",
        "approved_at",
        "distilled_by",
        "project_id",
    )
    cards: dict[int, dict[str, Any]] = {}
    rows = SchemaExemplar.objects.filter(schema_id__in=ids).values_list(
        "schema_id", "trace_id", "independence", "features", *(f"schema__{f}" for f in fields)
    )
    for schema_id, trace_id, independence, feats, *schema in rows:
        if schema_id not in cards:
            row = dict(zip(fields, schema, strict=True))
            approved = row.pop("approved_by_id") is not None or row.pop("approved_at") is not None
            row.pop("approved_at", None)
            cards[schema_id] = {"id": schema_id, **row, "approved": approved, "exemplars": []}
        cards[schema_id]["exemplars"].append(
            {"trace_id": trace_id, "independence": independence, "features": feats}
        )
    return cards


# --- embeddings -------------------------------------------------------------------------------------------------------


def embedding_model() -> str:
    return os.environ.get("CULPRIT_SCHEMA_EMBEDDING_MODEL", "") or getattr(
        settings, "CULPRIT_SCHEMA_EMBEDDING_MODEL", ""
    )


def embed(texts: list[str], *, project_id: int | None = None) -> list[list[float]] | None:
    """Embeddings through litellm, or None when no model is configured or the provider fails (retrieval then
    stays lexical: an embedding outage must not stop attribution). With ``project_id`` the request goes to the
    project's model endpoint (its ``api_base``) with the project's key, or a placeholder key, never the server's
    key at an endpoint a project chose (``attribution.llm.provider_key``); every connection passes the outbound
    policy."""
    model = embedding_model()
    if not model or not texts:
        return None
    import litellm

    from .. import outbound

    outbound.install_litellm_guard()  # the deployment's embedding model, but its connections pass the policy too
    try:
        endpoint = _embedding_endpoint(model, project_id)
        response = litellm.embedding(model=model, input=texts, timeout=30, **endpoint)
        return [
            list(map(float, item["embedding"] if isinstance(item, dict) else item.embedding))
            for item in response.data
        ]
    except Exception as exc:  # noqa: BLE001 - any provider error degrades to lexical retrieval
        logger.warning("schema embedding failed: %s", type(exc).__name__)
        return None


def _embedding_endpoint(model: str, project_id: int | None) -> dict[str, Any]:
    """``api_base`` and ``api_key`` for an embedding request: the project's endpoint and key when it set an
    endpoint, else the key rules of the chat models (server keys only for opted-in providers, else a placeholder:
    litellm given no key would read OPENAI_API_KEY from the environment)."""
    from .. import outbound
    from ..crypto import decrypt
    from ..llm import provider_key
    from ..models import ProjectLlmSettings

    row = ProjectLlmSettings.objects.filter(project_id=project_id).first() if project_id is not None else None
    api_base = row.api_base if row is not None else ""
    project_key = decrypt(row.api_key_encrypted) if row is not None and row.api_key_encrypted else ""
    if api_base:
        outbound.check_url(api_base)
    key = provider_key(model=model, api_base=api_base, project_key=project_key)
    return {"api_key": key} | ({"api_base": api_base} if api_base else {})


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=False))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0


def _with_embeddings(
    scored: list[tuple[float, int]],
    query: Query,
    project_id: int | None = None,
) -> list[tuple[float, int]]:
    vectors = dict(
        ErrorSchema.objects.filter(pk__in=[pk for _, pk in scored], embedding__isnull=False).values_list(
            "pk", "embedding"
        )
    )
    wanted = embed([" ".join(query.terms)], project_id=project_id) if vectors else None
    if not wanted:
        return scored
    return [
        ((s + max(0.0, cosine(wanted[0], vectors[pk]))) / 2 if pk in vectors else s, pk) for s, pk in scored
    ]
