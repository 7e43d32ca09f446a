"""The HTTP replay hook contract, version ``culprit.replay/1``.

A user's own multi-agent system can serve counterfactual replays for Culprit: it exposes one HTTPS (or HTTP) endpoint,
the project's *hook URL*, and Culprit POSTs JSON to it. The pydantic models below are the contract; Culprit validates
every response against them, and ``json_schema()`` / ``openapi_components()`` publish them.

Request (``Content-Type: application/json``), one of two actions:

* **replay** -- ``{"version": "culprit.replay/1", "action": "replay", "trace": {...}, "prefix": [...],
  "corrections": [...], "limits": {...}}``. ``trace`` is ``{"id", "name", "question", "ground_truth", "agents",
  "system_prompts"}``. ``prefix`` is every recorded step *before* the first corrected step, each ``{"index", "agent",
  "kind", "content", "tool_name"}``, kept as recorded. ``corrections`` is ``[{"index", "agent", "content"}]`` sorted by
  index: step ``index`` (taken by ``agent``) must be replaced by ``content``. ``limits`` is ``{"max_steps",
  "max_cost_usd", "timeout_s"}`` (``max_cost_usd`` is null when there is no cost limit). A hook that predates the
  ``action`` field may treat a body without ``action`` as a replay.

  The hook reruns its system from the first corrected step and answers ``200`` with ``{"continuation": [...],
  "outcome": "success" | "failure" | "unknown", "final_answer": str, "cost_usd": number >= 0}``. ``continuation``
  is the run from the first corrected step (inclusive, so its first element is normally the corrected step itself)
  to the end, each step ``{"agent", "kind", "content", "tool_name"?}`` with ``kind`` one of ``message, thought,
  llm_call, tool_call, tool_result, human, system``; Culprit numbers them from the first corrected index. At most
  ``limits.max_steps`` steps.

* **propose** -- ``{"version", "action": "propose", "trace", "prefix", "index"}`` (``prefix`` = the steps before
  ``index``): the hook proposes the corrected action for step ``index`` (a minimal local fix that does not reveal the
  answer) and answers ``200`` with ``{"content": str}``.

Responses: unknown extra fields are ignored; everything else is checked strictly (no coercion of ``"1"`` to ``1``;
``outcome`` and ``kind`` from the lists above; the body at most 5 MB). A response that does not match is an error and
is not retried.

Errors: any non-2xx status other than the transient ones below fails the replay at once (no retry); Culprit reports
the URL and status, and the first 200 characters of the body. Return ``4xx`` for requests you will never serve
(unknown trace, unsupported version) so Culprit does not retry them.

Auth: when the project configures an auth header, every request carries it (default header name ``Authorization``,
e.g. ``Bearer <token>``); its value is never logged nor shown in errors. Use HTTPS when the header is a secret.

Timeouts and retries: each request has a timeout (``limits.timeout_s``, default 30 s). Transient failures --
connection refused or reset, a timeout, HTTP ``429``, ``502``, ``503``, ``504`` -- are retried up to the configured
number of retries (default 2) with exponential backoff (0.5 s, 1 s, 2 s, ...).

Idempotency: because of retries the hook may receive the same body twice (e.g. after a timeout on Culprit's side
while the hook was still working); it must be safe to call twice with the same body and should return the same
answer. Every request carries an ``Idempotency-Key`` header (the SHA-256 of the body) that a hook may use to
de-duplicate or cache. Deterministic systems satisfy this trivially; stochastic ones should cache by that key.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.json_schema import models_json_schema

VERSION = "culprit.replay/1"
MAX_RESPONSE_BYTES = 5 * 1024 * 1024
STEP_KINDS = ("message", "thought", "llm_call", "tool_call", "tool_result", "human", "system")
OUTCOMES = ("success", "failure", "unknown")

StepKind = Literal["message", "thought", "llm_call", "tool_call", "tool_result", "human", "system"]
Outcome = Literal["success", "failure", "unknown"]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _Response(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


# --- request ---------------------------------------------------------------------------------------------------------


class HookTrace(_Request):
    """The trace being replayed, as Culprit stores it."""

    id: int
    name: str
    question: str
    ground_truth: str
    agents: list[str]
    system_prompts: dict[str, str]


class PrefixStep(_Request):
    """A recorded step before the first corrected one; kept as recorded."""

    index: int = Field(ge=0)
    agent: str
    kind: StepKind
    content: str
    tool_name: str = ""


class Correction(_Request):
    """Replace recorded step ``index`` (taken by ``agent``) with ``content``."""

    index: int = Field(ge=0)
    agent: str
    content: str


class Limits(_Request):
    max_steps: int = Field(ge=1, description="the continuation may have at most this many steps")
    max_cost_usd: float | None = Field(ge=0, description="what the replay may cost; null when unlimited")
    timeout_s: float = Field(
        gt=0, description="Culprit stops waiting for the response after this many seconds"
    )


class ReplayRequest(_Request):
    version: Literal["culprit.replay/1"] = VERSION
    action: Literal["replay"] = "replay"
    trace: HookTrace
    prefix: list[PrefixStep]
    corrections: list[Correction] = Field(min_length=1)
    limits: Limits


class ProposeRequest(_Request):
    version: Literal["culprit.replay/1"] = VERSION
    action: Literal["propose"] = "propose"
    trace: HookTrace
    prefix: list[PrefixStep]
    index: int = Field(ge=0, description="the step to propose a corrected action for")


# --- response --------------------------------------------------------------------------------------------------------


class ContinuationStep(_Response):
    agent: str
    kind: StepKind
    content: str
    tool_name: str = ""


class ReplayResponse(_Response):
    continuation: list[ContinuationStep]
    outcome: Outcome
    final_answer: str
    cost_usd: float = Field(ge=0)

    @field_validator("cost_usd")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value


class ProposeResponse(_Response):
    content: str


MODELS: tuple[type[BaseModel], ...] = (ReplayRequest, ProposeRequest, ReplayResponse, ProposeResponse)


def json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON Schema of one contract model (a request as Culprit sends it, a response as Culprit reads it)."""
    mode = "serialization" if issubclass(model, _Request) else "validation"
    return model.model_json_schema(mode=mode)


def request_schema() -> dict[str, Any]:
    return json_schema(ReplayRequest)


def response_schema() -> dict[str, Any]:
    return json_schema(ReplayResponse)


def openapi_components(ref_template: str = "#/components/schemas/{model}") -> dict[str, Any]:
    """Every contract model as OpenAPI ``components.schemas`` entries, cross-referenced with ``ref_template``."""
    _, top = models_json_schema(
        [(m, "serialization" if issubclass(m, _Request) else "validation") for m in MODELS],
        ref_template=ref_template,
    )
    return dict(top.get("$defs", {}))


def openapi_extend(schema: dict[str, Any]) -> None:
    """Publish the contract in the API's OpenAPI document: the models under ``components.schemas`` and the hook itself
    under ``webhooks`` (OpenAPI 3.1: requests Culprit sends to an endpoint the user runs)."""
    schema.setdefault("components", {}).setdefault("schemas", {}).update(openapi_components())

    def ref(model: type[BaseModel]) -> dict[str, str]:
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    schema.setdefault("webhooks", {})["replayHook"] = {
        "post": {
            "summary": "Counterfactual replay hook (served by your multi-agent system)",
            "description": (__doc__ or "").strip(),
            "operationId": "culprit_replay_hook",
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"oneOf": [ref(ReplayRequest), ref(ProposeRequest)]}}
                },
            },
            "responses": {
                "200": {
                    "description": "The continuation and outcome (replay) or the corrected content (propose)",
                    "content": {
                        "application/json": {"schema": {"oneOf": [ref(ReplayResponse), ref(ProposeResponse)]}}
                    },
                },
                "4XX": {"description": "A request the hook will never serve: not retried"},
                "429": {"description": "Transient: retried with backoff (also 502, 503, 504)"},
            },
        }
    }
