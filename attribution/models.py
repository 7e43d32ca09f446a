"""Attribution runs, their verdicts, the LLM settings of a project and every LLM call made.

This app depends on ``tracing`` only. A run is the unit of work people start (one method over a set of traces); a
verdict is one trace's answer within a run. The database rows, not the broker, are the source of truth: a verdict is
unique per (run, trace), so a task re-delivered after a crash can never write a second one.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from tracing.jobs import Job, JobStatusChoices
from tracing.models import Project, Trace


class ProjectLlmSettings(models.Model):
    """Which model a project's LLM methods call, and how. The API key is stored encrypted (Fernet, key from the
    environment) and is decrypted only inside the gateway at call time: never logged, never passed to a task."""

    project = models.OneToOneField(Project, on_delete=models.CASCADE, related_name="llm_settings")
    model = models.CharField(
        max_length=200, blank=True
    )  # litellm model string: openai/gpt-4o-mini, ollama/llama3…
    api_base = models.URLField(max_length=300, blank=True)  # OpenAI-compatible endpoints, Ollama, vLLM
    api_key_encrypted = models.TextField(blank=True)
    temperature = models.FloatField(default=0.0)
    timeout_seconds = models.PositiveIntegerField(default=120)
    max_retries = models.PositiveSmallIntegerField(default=3)
    spending_cap_usd = models.DecimalField(max_digits=10, decimal_places=4, null=True, blank=True)
    # What the model can take and what it costs. Empty: litellm's model map when it knows the model, else unknown
    # (the page says so; the context then falls back to 8k and money caps cannot be enforced, only token caps).
    context_tokens = models.PositiveIntegerField(null=True, blank=True)
    max_output_tokens = models.PositiveIntegerField(null=True, blank=True)
    input_price_per_mtok = models.DecimalField(max_digits=12, decimal_places=4, null=True, blank=True)
    output_price_per_mtok = models.DecimalField(max_digits=12, decimal_places=4, null=True, blank=True)
    # Per-run budgets, checked before every request from the prompt's counted tokens plus the maximum output.
    run_max_tokens = models.PositiveBigIntegerField(null=True, blank=True)
    run_max_cost_usd = models.DecimalField(max_digits=10, decimal_places=4, null=True, blank=True)
    # Counterfactual replay of real traces through the team's own system (contract: attribution/replay/hook_contract.py).
    replay_hook_url = models.URLField(max_length=500, blank=True)
    replay_hook_auth_encrypted = models.TextField(
        blank=True
    )  # the full header value, e.g. "Bearer …", encrypted
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.project}: {self.model or 'no model'}"


class RunStatus(JobStatusChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Finished"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


FINISHED_RUN_STATUSES = RunStatus.finished_values()


class AttributionRun(Job):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="attribution_runs")
    method = models.CharField(max_length=40)
    model = models.CharField(max_length=200, blank=True)  # empty for offline methods
    params = models.JSONField(default=dict, blank=True)  # {"with_ground_truth": true, ...}
    trace_ids = models.JSONField(default=list)  # the set the run covers, fixed when it starts
    description = models.CharField(
        max_length=300, blank=True
    )  # how the set was chosen ("3 traces", "filter: …")
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.QUEUED)
    total = models.PositiveIntegerField(default=0)
    done = models.PositiveIntegerField(default=0)  # verdicts written, ok or failed
    failed = models.PositiveIntegerField(default=0)
    calls = models.PositiveIntegerField(default=0)
    input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    cost = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    # error, heartbeat_at (claimed, a verdict written, a beat while a worker attributes a trace) and the timestamps:
    # tracing.jobs.Job. Starts of the run (its fan-out) are counted in the column the reaper's restart counter used.
    attempts = models.PositiveSmallIntegerField(default=0, db_column="reaped")

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=RunStatus.values), name="run_status_valid")
        ]
        indexes = [
            # The project's run list, newest first.
            models.Index(fields=["project", "-created_at"], name="run_project_recent"),
        ]

    def __str__(self) -> str:
        return f"{self.method} run {self.pk} ({self.status})"


class VerdictStatus(models.TextChoices):
    OK = "ok", "Verdict"
    FAILED = "failed", "Failed"


class Verdict(models.Model):
    run = models.ForeignKey(AttributionRun, on_delete=models.CASCADE, related_name="verdicts")
    trace = models.ForeignKey(Trace, on_delete=models.CASCADE, related_name="verdicts")
    method = models.CharField(max_length=40)  # copied from the run: the trace page lists verdicts by method
    status = models.CharField(max_length=8, choices=VerdictStatus.choices, default=VerdictStatus.OK)
    agent_name = models.CharField(max_length=200, blank=True)
    step_index = models.IntegerField(null=True, blank=True)
    confidence = models.FloatField(null=True, blank=True)
    reason = models.TextField(blank=True)
    category = models.CharField(max_length=80, blank=True)
    scores = models.JSONField(default=list, blank=True)  # suspicion per step, in step order
    details = models.JSONField(default=dict, blank=True)
    calls = models.PositiveIntegerField(default=0)
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    cost = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # Exactly one verdict per trace and run: re-delivered tasks find it and stop.
            models.UniqueConstraint(fields=["run", "trace"], name="verdict_unique_per_run_trace"),
            models.CheckConstraint(condition=Q(status__in=VerdictStatus.values), name="verdict_status_valid"),
        ]
        indexes = [
            # The trace page: this trace's verdicts, newest first.
            models.Index(fields=["trace", "-created_at"], name="verdict_trace_recent"),
        ]

    def __str__(self) -> str:
        return f"{self.method}: {self.agent_name} @ {self.step_index}"


class LlmCall(models.Model):
    """One request to a model (or a cache hit), for accounting and the spending cap. No prompt text is kept."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="llm_calls")
    run = models.ForeignKey(
        AttributionRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="llm_calls"
    )
    trace = models.ForeignKey(Trace, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # The injection campaign a fault writer's or replayer's call was made for (its budget sums these rows).
    campaign = models.ForeignKey(
        "InjectionCampaign", null=True, blank=True, on_delete=models.SET_NULL, related_name="llm_calls"
    )
    method = models.CharField(max_length=40, blank=True)
    purpose = models.CharField(
        max_length=80, blank=True
    )  # "all_at_once", "step_by_step step 7", "window 2/5"…
    model = models.CharField(max_length=200)
    ok = models.BooleanField(default=True)
    cached = models.BooleanField(default=False)
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    cost = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    latency_ms = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    # The tokens were counted on this side, not reported by the provider: the prompt of an attempt that reached the
    # server but failed (no usage comes back), or of a request whose worker stopped mid-way.
    estimated = models.BooleanField(default=False)
    # Set while the request is in flight: the row then holds the most it may cost (counted prompt, maximum output),
    # which budgets count until this moment (attribution/llm_budget.py: reserve before sending, the expiry rule).
    # The budget queries filter by run, campaign or project (their foreign-key indexes), never by this column.
    reserved_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # The spending cap: sum of a project's costs.
            models.Index(fields=["project", "created_at"], name="llmcall_project_time"),
        ]

    def __str__(self) -> str:
        return f"{self.purpose} ({self.model}: {self.input_tokens}+{self.output_tokens} tokens)"


class CampaignStatus(JobStatusChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Finished"
    STOPPED = "stopped", "Stopped by its budget"
    CANCELLED = "cancelled", "Cancelled"
    FAILED = "failed", "Failed"


FINISHED_CAMPAIGN_STATUSES = CampaignStatus.finished_values()


class InjectionCampaign(Job):
    """Break successful runs on purpose: each planned ``Injection`` puts one fault into one step of one origin trace
    and replays the run; injections that turn success into failure become new traces labelled at the fault.

    The rows are the source of truth. The budget (replays, tokens, cost) is shared by every worker through atomic
    updates of the counters below, so a campaign stops cleanly at its limit however many workers take part.
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="injection_campaigns")
    description = models.CharField(max_length=300, blank=True)
    trace_ids = models.JSONField(default=list)  # the origin traces (successful runs), fixed at creation
    # {"faults_per_trace": 3, "seed": 0, "writer": "perturb" | "llm", "kinds": [...]}
    params = models.JSONField(default=dict, blank=True)
    max_replays = models.PositiveIntegerField(null=True, blank=True)
    max_tokens = models.PositiveBigIntegerField(null=True, blank=True)
    max_cost = models.DecimalField(max_digits=10, decimal_places=4, null=True, blank=True)
    status = models.CharField(max_length=16, choices=CampaignStatus.choices, default=CampaignStatus.QUEUED)
    total = models.PositiveIntegerField(default=0)  # injections planned
    done = models.PositiveIntegerField(default=0)  # injections settled: kept, discarded, failed or skipped
    kept = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    replays = models.PositiveIntegerField(default=0)  # replays reserved against the budget
    tokens = models.PositiveBigIntegerField(default=0)
    cost = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    stop_reason = models.CharField(max_length=300, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    attempts = models.PositiveSmallIntegerField(default=0, db_column="reaped")  # as AttributionRun

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=CampaignStatus.values), name="campaign_status_valid"
            )
        ]
        indexes = [models.Index(fields=["project", "-created_at"], name="campaign_project_recent")]

    def __str__(self) -> str:
        return f"injection campaign {self.pk} ({self.status})"


class InjectionStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    KEPT = "kept", "Kept: the fault broke the run"
    DISCARDED = "discarded", "Discarded: the run still succeeded"
    FAILED = "failed", "Failed"
    SKIPPED = "skipped", "Skipped (budget or cancelled)"


class Injection(models.Model):
    """One planned fault: which step of which origin trace, which kind, and what became of it."""

    campaign = models.ForeignKey(InjectionCampaign, on_delete=models.CASCADE, related_name="injections")
    origin = models.ForeignKey(Trace, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(
        max_length=120
    )  # unique within the campaign: "t12:s5:wrong_number", "t12:sandbox-3"
    step_index = models.IntegerField(null=True, blank=True)
    agent_name = models.CharField(max_length=200, blank=True)
    fault_kind = models.CharField(max_length=40)
    category = models.CharField(max_length=80, blank=True)  # taxonomy code
    original = models.TextField(blank=True)
    faulty = models.TextField(blank=True)
    status = models.CharField(max_length=12, choices=InjectionStatus.choices, default=InjectionStatus.PENDING)
    outcome = models.CharField(max_length=12, blank=True)  # the replay's outcome
    final_answer = models.TextField(blank=True)
    result_trace = models.ForeignKey(
        Trace, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    error = models.TextField(blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["campaign", "key"], name="injection_unique_key"),
            models.CheckConstraint(
                condition=Q(status__in=InjectionStatus.values), name="injection_status_valid"
            ),
        ]
        indexes = [models.Index(fields=["campaign", "status"], name="injection_campaign_status")]

    def __str__(self) -> str:
        return f"{self.fault_kind} at step {self.step_index} of trace {self.origin_id}"


class ReplayRecord(models.Model):
    """One finished replay, written the moment it returns. A task re-delivered after a crash finds its replays here
    and does not run them again (replays cost model calls or a round trip to the team's own system)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    trace = models.ForeignKey(Trace, on_delete=models.CASCADE, related_name="replay_records")
    run = models.ForeignKey(
        AttributionRun, null=True, blank=True, on_delete=models.CASCADE, related_name="replays"
    )
    campaign = models.ForeignKey(
        InjectionCampaign, null=True, blank=True, on_delete=models.CASCADE, related_name="replay_records"
    )
    key = models.CharField(max_length=200)  # which corrections: "3,7" or "inject:t12:s5:wrong_number"
    purpose = models.CharField(max_length=20, blank=True)
    replayer = models.CharField(max_length=20, blank=True)
    corrections = models.JSONField(default=dict)  # {"3": "corrected content"}
    outcome = models.CharField(max_length=12)
    final_answer = models.TextField(blank=True)
    continuation = models.JSONField(default=list)
    details = models.JSONField(
        default=dict, blank=True
    )  # the replayer's own account (model, stop reason, judge)
    tokens = models.PositiveIntegerField(default=0)
    cost = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["run", "trace", "key"], condition=Q(run__isnull=False), name="replay_unique_per_run"
            ),
            models.UniqueConstraint(
                fields=["campaign", "trace", "key"],
                condition=Q(campaign__isnull=False),
                name="replay_unique_per_campaign",
            ),
        ]

    def __str__(self) -> str:
        return f"replay {self.key} of trace {self.trace_id}: {self.outcome}"


# --- the error-schema cache (attribution/schemas/) --------------------------------------------------------------------


class SchemaStatus(models.TextChoices):
    CANDIDATE = "candidate", "Candidate"  # never used for attribution
    TRUSTED = "trusted", "Trusted"  # two independent verified cases, or an owner's approval
    RETIRED = "retired", "Retired"


class SchemaScope(models.TextChoices):
    PROJECT = "project", "This project only"
    SHARED = "shared", "Shared library"  # read by other projects only when they opt in


class ErrorSchema(models.Model):
    """A recurring failure pattern distilled from verified cases: what it looks like (signature), when it arises
    (context), and how to find the decisive step (detection). The structured parts are recomputed from the exemplars
    on every merge, so a schema is always the aggregate of the cases behind it, and leave-one-out can recompute it
    without any one of them."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="error_schemas")
    key = models.CharField(
        max_length=200
    )  # the structural core; cases with the same key merge into one schema
    title = models.CharField(max_length=200)
    category = models.CharField(max_length=80, blank=True)  # a taxonomy code (attribution.taxonomy)
    style = models.CharField(max_length=16)  # "group" or "orchestrated": the structured filter at retrieval
    signature = models.JSONField(
        default=dict
    )  # role, rank, kind, agent, signals, phrases, kinds around the step
    context = models.TextField(blank=True)  # when it arises
    detection = models.JSONField(default=dict)  # the executable heuristic (see schemas.features.match_steps)
    detection_text = models.TextField(blank=True)  # the same, in words
    search_text = models.TextField(blank=True)  # what the lexical index reads (tags, phrases, title)
    embedding = models.JSONField(null=True, blank=True)  # litellm embedding of search_text, when configured
    status = models.CharField(max_length=12, choices=SchemaStatus.choices, default=SchemaStatus.CANDIDATE)
    scope = models.CharField(max_length=12, choices=SchemaScope.choices, default=SchemaScope.PROJECT)
    distilled_by = models.CharField(
        max_length=200, blank=True
    )  # "extractor" or the model that wrote the prose
    edited = models.BooleanField(default=False)  # an owner rewrote the prose: distillation keeps their words
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    approved_at = models.DateTimeField(null=True, blank=True)
    retrievals = models.PositiveIntegerField(default=0)
    hits = models.PositiveIntegerField(default=0)  # informed a verdict later confirmed by a verified label
    misses = models.PositiveIntegerField(default=0)  # informed a verdict a verified label contradicted
    last_used_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at", "-id"]
        constraints = [
            # Near-duplicates merge: one schema per structural key and project.
            models.UniqueConstraint(fields=["project", "key"], name="errorschema_unique_key_per_project"),
            models.CheckConstraint(
                condition=Q(status__in=SchemaStatus.values), name="errorschema_status_valid"
            ),
            models.CheckConstraint(condition=Q(scope__in=SchemaScope.values), name="errorschema_scope_valid"),
        ]
        indexes = [
            # Retrieval's structured filter: a project's trusted schemas of one style.
            models.Index(fields=["project", "status", "style"], name="errorschema_retrieval"),
            # Shared-library retrieval: trusted shared schemas of one style, any project.
            models.Index(fields=["scope", "status", "style"], name="errorschema_shared"),
        ]

    def __str__(self) -> str:
        return f"{self.title} ({self.status})"


class SchemaExemplar(models.Model):
    """One verified case behind a schema (its provenance): the trace and step, where the verdict came from, and the
    features extracted from it. ``independence`` groups cases that are not independent evidence (the same upload,
    or traces derived from one original): promotion counts distinct values, never rows."""

    schema = models.ForeignKey(ErrorSchema, on_delete=models.CASCADE, related_name="exemplars")
    trace = models.ForeignKey(Trace, on_delete=models.CASCADE, related_name="+")
    step_index = models.PositiveIntegerField()
    agent_name = models.CharField(max_length=200)
    source = models.CharField(
        max_length=20
    )  # imported, adjudicated, injected (LabelSource) or counterfactual
    gold_label = models.ForeignKey(
        "tracing.GoldLabel", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    verdict = models.ForeignKey(Verdict, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    independence = models.CharField(max_length=80)
    features = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            # Distillation is idempotent: a case is counted once per schema.
            models.UniqueConstraint(
                fields=["schema", "trace", "step_index"], name="schemaexemplar_unique_case"
            ),
        ]
        indexes = [
            # Distillation skips traces already distilled; leave-one-out looks up a trace's own cases.
            models.Index(fields=["trace"], name="schemaexemplar_trace"),
        ]

    def __str__(self) -> str:
        return f"{self.agent_name} in trace {self.trace_id} (schema {self.schema_id})"


class SchemaAction(models.TextChoices):
    CREATED = "created", "Created"
    MERGED = "merged", "Case merged"
    PROMOTED = "promoted", "Promoted"
    APPROVED = "approved", "Approved"
    EDITED = "edited", "Edited"
    RETIRED = "retired", "Retired"
    RESTORED = "restored", "Restored"
    SHARED = "shared", "Scope changed"


class SchemaEvent(models.Model):
    """The audit log: every change to a schema, who made it and why. Rows are only ever added."""

    schema = models.ForeignKey(ErrorSchema, on_delete=models.CASCADE, related_name="events")
    action = models.CharField(max_length=12, choices=SchemaAction.choices)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    detail = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(action__in=SchemaAction.values), name="schemaevent_action_valid"
            )
        ]
        indexes = [
            # The schema page's audit log, newest first.
            models.Index(fields=["schema", "-created_at"], name="schemaevent_schema_recent"),
        ]

    def __str__(self) -> str:
        return f"{self.action} of schema {self.schema_id}"


class UseOutcome(models.TextChoices):
    PENDING = "pending", "Pending"
    HIT = "hit", "Confirmed"
    MISS = "miss", "Contradicted"


class SchemaUse(models.Model):
    """A schema informed a verdict. When a verified label for the trace arrives the use becomes a hit or a miss,
    once (conditional update on ``outcome``), and the schema's counters move with it."""

    schema = models.ForeignKey(ErrorSchema, on_delete=models.CASCADE, related_name="uses")
    verdict = models.ForeignKey(Verdict, on_delete=models.CASCADE, related_name="schema_uses")
    trace = models.ForeignKey(Trace, on_delete=models.CASCADE, related_name="+")
    step_index = models.IntegerField(null=True, blank=True)  # the step the schema pointed at
    outcome = models.CharField(max_length=8, choices=UseOutcome.choices, default=UseOutcome.PENDING)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["schema", "verdict"], name="schemause_unique_per_verdict"),
            models.CheckConstraint(
                condition=Q(outcome__in=UseOutcome.values), name="schemause_outcome_valid"
            ),
        ]
        indexes = [
            # Settling uses when a verified label arrives: the pending uses of one trace.
            models.Index(fields=["trace", "outcome"], name="schemause_trace_outcome"),
        ]

    def __str__(self) -> str:
        return f"schema {self.schema_id} in verdict {self.verdict_id}"


class SchemaLibrarySettings(models.Model):
    """Per-project isolation is the default: a project reads the shared library only after an owner opts in."""

    project = models.OneToOneField(Project, on_delete=models.CASCADE, related_name="schema_settings")
    use_shared_library = models.BooleanField(default=False)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"schema library settings of project {self.project_id}"


class AttributorStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Training"
    SUCCEEDED = "succeeded", "Trained"
    FAILED = "failed", "Failed"


class AttributorModel(models.Model):
    """A learned attributor (``attribution.learning``) trained from verified labels of one or more projects.

    ``parameters`` holds the model as plain JSON arrays (``Attributor.to_dict``), checked for shape and finiteness
    when read: nothing a user could upload is ever unpickled. ``cv`` holds the grouped cross-validation measured
    before the final fit on every label, beside baselines fitted on the training folds."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="attributor_models")
    name = models.CharField(max_length=120)
    version = models.PositiveIntegerField(default=1)
    training_projects = models.JSONField(default=list)  # [{"id": 3, "name": "Alpha"}, ...]
    label_sources = models.JSONField(default=list)  # ["imported", "adjudicated", ...]
    feature_set = models.CharField(max_length=40, blank=True)
    folds = models.PositiveSmallIntegerField(default=5)
    status = models.CharField(
        max_length=16, choices=AttributorStatus.choices, default=AttributorStatus.QUEUED
    )
    progress = models.PositiveSmallIntegerField(default=0)  # percent
    stage = models.CharField(max_length=120, blank=True)  # "fold 3 of 5", "final fit"
    n_traces = models.PositiveIntegerField(default=0)
    n_steps = models.PositiveIntegerField(default=0)
    cv = models.JSONField(
        default=dict, blank=True
    )  # {agent_accuracy, step_accuracy, intervals, baselines, ...}
    summary = models.JSONField(default=dict, blank=True)  # strongest features, agent confusion, label counts
    # The labelled traces its final fit learned from, and the runs they were derived from (a fault-injected copy
    # teaches about its original): scored on them, a model shows its memory, so the evaluation page leaves them out.
    # None for a model trained before it was kept (``learning.selectors.trained_on`` then reads it from the labels).
    trained_trace_ids = models.JSONField(null=True, blank=True)
    parameters = models.JSONField(default=dict, blank=True)
    seconds = models.FloatField(default=0)
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Last sign of life (claimed, a stage reached); the reaper re-enqueues a training gone quiet.
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    reaped = models.PositiveSmallIntegerField(default=0)  # times the reaper had to re-enqueue it
    # An automatic retrain (``learning.services.attributors_retrain_due``): the version it retrains, and how many
    # labelled traces its training projects held when it was queued (the next retrain counts new labels from here).
    retrained_from = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    labelled_at_queue = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "name", "version"], name="attributor_unique_version"),
            models.CheckConstraint(
                condition=Q(status__in=AttributorStatus.values), name="attributor_status_valid"
            ),
        ]
        indexes = [models.Index(fields=["project", "-created_at"], name="attributor_project_recent")]

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}"

    @property
    def training_project_ids(self) -> list[int]:
        """The ids of the projects whose labels it learns from (``training_projects`` keeps their names too)."""
        return [p["id"] for p in self.training_projects if isinstance(p, dict) and "id" in p]

    @property
    def is_finished(self) -> bool:
        return self.status in (AttributorStatus.SUCCEEDED, AttributorStatus.FAILED)


class AutoAttribute(models.TextChoices):
    OFF = "off", "Off"
    FAILED = "failed", "Failed traces"
    ALL = "all", "Every trace"


class ProjectAttribution(models.Model):
    """How a project attributes by default: the method its Attribute buttons preselect, the learned model the
    ``learned`` method uses, and the heuristic's priors calibrated on the project's own labels."""

    project = models.OneToOneField(Project, on_delete=models.CASCADE, related_name="attribution_settings")
    default_method = models.CharField(max_length=40, default="heuristic")
    attributor = models.ForeignKey(
        AttributorModel, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # attribution.learning.calibration.Calibration.to_dict(): counts per (style, role, rank) and each label's cell.
    calibration = models.JSONField(default=dict, blank=True)
    calibrated_at = models.DateTimeField(null=True, blank=True)
    # Retrain the default model once this many labelled traces have arrived since it was queued (0: never).
    retrain_after = models.PositiveIntegerField(default=10)
    # Attribute traces that arrive from outside (imports, the API, OTLP) with the default method: off, the failed
    # ones, or all of them (attribution.services.auto). ``auto_error``: why the last sweep could not start a run.
    auto_attribute = models.CharField(max_length=8, choices=AutoAttribute.choices, default=AutoAttribute.OFF)
    auto_error = models.CharField(max_length=500, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.project}: {self.default_method}"


class AutoAttributePending(models.Model):
    """A trace that arrived while its project attributes new traces automatically, waiting for the next sweep
    (``attribution.services.auto``). Written in the transaction that wrote the trace, so none is ever missed; the sweep
    deletes the rows it turns into a run in the transaction that creates the run."""

    trace = models.OneToOneField(Trace, on_delete=models.CASCADE, primary_key=True, related_name="+")
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+", db_index=False)
    arrived_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["project", "arrived_at"], name="autopending_project_arrived")]

    def __str__(self) -> str:
        return f"trace {self.trace_id} waiting for automatic attribution"
