"""The normalised trace model: projects own uploads, uploads become traces, traces hold agents and steps.

Traces are immutable once imported (later analysis adds rows in other apps, it never edits steps), so the
per-trace counts are stored on the Trace row at import time instead of being recounted on every list page.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.contrib.postgres.search import SearchVectorField
from django.db import models
from django.db.models import F, Q

from .jobs import Job, JobStatusChoices


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    ANNOTATOR = "annotator", "Annotator"
    VIEWER = "viewer", "Viewer"


class Project(models.Model):
    name = models.CharField(max_length=120, unique=True)
    slug = models.SlugField(max_length=140, unique=True)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, through="Membership", related_name="projects")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.VIEWER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "user"], name="membership_unique_user_per_project"),
            models.CheckConstraint(condition=Q(role__in=Role.values), name="membership_role_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.project} ({self.role})"

    @property
    def can_upload(self) -> bool:
        return self.role in (Role.OWNER, Role.ANNOTATOR)


def upload_path(instance: RawUpload, filename: str) -> str:
    # Content-addressed per project: the same bytes are stored once, the original name is kept on the row.
    return f"uploads/{instance.project_id}/{instance.sha256[:2]}/{instance.sha256}"


class RawUpload(models.Model):
    """The bytes a person gave us, exactly as given, so any import can be re-run or audited."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="uploads")
    sha256 = models.CharField(max_length=64)
    filename = models.CharField(max_length=500)
    size = models.PositiveBigIntegerField()
    file = models.FileField(upload_to=upload_path, max_length=300)
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            # Re-uploading the same bytes into the same project reuses this row (duplicate detection).
            models.UniqueConstraint(fields=["project", "sha256"], name="rawupload_unique_bytes_per_project"),
        ]

    def __str__(self) -> str:
        return f"{self.filename} ({self.sha256[:12]})"


class JobStatus(JobStatusChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Importing"
    SUCCEEDED = "succeeded", "Imported"
    DUPLICATE = "duplicate", "Already imported"
    FAILED = "failed", "Failed"


FINISHED_JOB_STATUSES = JobStatus.finished_values()


class DuplicatePolicy(models.TextChoices):
    """What an import does with a trace whose content hash is already in the project."""

    SKIP = "skip", "Skip traces already in the project"
    IMPORT = "import", "Import them anyway"


class IngestJob(Job):
    """One uploaded file (or one member of an uploaded zip) on its way to becoming traces.

    The row, not the broker, is the source of truth: a task re-delivered after a worker died finds the job here
    and continues; traces already committed by the earlier attempt are recognised by (upload, ordinal).
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="ingest_jobs")
    batch = models.UUIDField(default=uuid.uuid4, db_index=True)  # one browser upload / one CLI call
    filename = models.CharField(max_length=500)
    upload = models.ForeignKey(
        RawUpload, null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs"
    )
    requested_format = models.CharField(max_length=40, blank=True)  # empty: detect automatically
    detected_format = models.CharField(max_length=40, blank=True)
    confidence = models.FloatField(
        null=True, blank=True
    )  # the detector's confidence; 1.0 when chosen by hand
    # The import report: counts, warnings (e.g. "label location span X not found") and the traces skipped as
    # duplicates (``duplicate_of``), written once when the job finishes (the trace list is appended to per batch).
    report = models.JSONField(default=dict, blank=True)
    duplicates = models.CharField(max_length=8, choices=DuplicatePolicy.choices, default=DuplicatePolicy.SKIP)
    # status, error, attempts, heartbeat_at and the timestamps: see tracing.jobs.Job (MAX_ATTEMPTS = 3 starts).
    status = models.CharField(max_length=16, choices=JobStatus.choices, default=JobStatus.QUEUED)
    steps_total = models.PositiveIntegerField(default=0)
    steps_done = models.PositiveIntegerField(default=0)
    trace_ids = models.JSONField(default=list, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)

    PROGRESS_FIELDS = ("steps_done", "steps_total")

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=JobStatus.values), name="ingestjob_status_valid")
        ]
        indexes = [models.Index(fields=["status", "heartbeat_at"], name="ingestjob_status_heartbeat")]

    def __str__(self) -> str:
        return f"{self.filename}: {self.status}"


class Outcome(models.TextChoices):
    FAILED = "failed", "Failed"
    SUCCEEDED = "succeeded", "Succeeded"
    UNKNOWN = "unknown", "Unknown"


class Provenance(models.TextChoices):
    UPLOADED = "uploaded", "Uploaded"
    INJECTED = "injected", "Fault injected"
    REPLAYED = "replayed", "Replayed"
    GENERATED = "generated", "Generated by the sandbox"


class Trace(models.Model):
    # Foreign keys without an index of their own where a composite index starts with them (Meta.indexes, the upload's
    # unique ordinal): each lone copy was one more index every imported trace had to enter.
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="traces", db_index=False)
    upload = models.ForeignKey(
        RawUpload, null=True, blank=True, on_delete=models.SET_NULL, related_name="traces", db_index=False
    )
    # Position of this trace inside its upload (a file may hold several runs); makes re-imports idempotent.
    ordinal = models.PositiveIntegerField(default=0)
    name = models.CharField(max_length=300)
    source_format = models.CharField(max_length=40)
    external_id = models.CharField(max_length=200, blank=True)
    question = models.TextField(blank=True)
    ground_truth = models.TextField(blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.UNKNOWN)
    provenance = models.CharField(max_length=16, choices=Provenance.choices, default=Provenance.UPLOADED)
    derived_from = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    metadata = models.JSONField(default=dict, blank=True)
    step_count = models.PositiveIntegerField(default=0)
    agent_count = models.PositiveIntegerField(default=0)
    # SHA-256 of the normalised content (tracing/content_hash.py): an import skips a trace already in the project.
    # Not unique: "import anyway" may deliberately add the same run twice.
    content_hash = models.CharField(max_length=64, blank=True, default="")
    # The run's totals in the page header (tracing/services/totals.py), written with the steps so a 100,000-step
    # trace's first view does not aggregate over them; {} on traces written before, filled on their first view.
    totals = models.JSONField(default=dict, blank=True)
    # Full-text search (tracing/search.py, PostgreSQL): the trace's steps with an id up to ``search_through`` have
    # their document in StepSearch; ``search_pending`` says steps above it may exist (a new trace, or steps an OTLP
    # build added). The indexer (tracing/services/search_index.py) clears it off the write path; until then a search
    # reads those steps' text directly, so results never lag behind the import.
    search_pending = models.BooleanField(default=True)
    search_through = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["upload", "ordinal"], name="trace_unique_ordinal_per_upload"),
            models.CheckConstraint(condition=Q(outcome__in=Outcome.values), name="trace_outcome_valid"),
        ]
        indexes = [
            # The trace list: one project's traces, newest first.
            models.Index(fields=["project", "-created_at"], name="trace_project_recent"),
            # The trace list filtered by format, and its header's counts (by format, with gold) from this index
            # alone: the ids are stored in it for the gold count's join.
            models.Index(
                fields=["project", "source_format"], include=["id"], name="trace_project_format_ids"
            ),
            # Label files and the OTLP receiver find a trace by the source's own id.
            models.Index(fields=["project", "external_id"], name="trace_project_external"),
            # Import: is a trace with this content already in the project?
            models.Index(fields=["project", "content_hash"], name="trace_project_content_hash"),
            # Search: the few traces whose newest steps are not indexed yet; the indexer: what is left to do.
            models.Index(fields=["project"], condition=Q(search_pending=True), name="trace_search_pending"),
        ]

    def __str__(self) -> str:
        return self.name


class Agent(models.Model):
    # No index of its own: the unique (trace, name) starts with it.
    trace = models.ForeignKey(Trace, on_delete=models.CASCADE, related_name="agents", db_index=False)
    name = models.CharField(max_length=200)  # normalised: "Orchestrator (-> WebSurfer)" -> "Orchestrator"
    system_prompt = models.TextField(blank=True)
    # Order of first appearance; also picks the agent's colour in the viewer.
    position = models.PositiveSmallIntegerField(default=0)
    step_count = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["position", "id"]
        constraints = [models.UniqueConstraint(fields=["trace", "name"], name="agent_unique_name_per_trace")]

    def __str__(self) -> str:
        return self.name

    @property
    def colour(self) -> int:
        return self.position % 12


class StepKind(models.TextChoices):
    MESSAGE = "message", "Message"
    THOUGHT = "thought", "Thought"
    LLM_CALL = "llm_call", "LLM call"
    TOOL_CALL = "tool_call", "Tool call"
    TOOL_RESULT = "tool_result", "Tool result"
    HUMAN = "human", "Human"
    SYSTEM = "system", "System"


class Step(models.Model):
    # No index of its own: the unique (trace, index) and the (trace, span_id) indexes both start with it, and a
    # third copy cost every step insert and every renumbered step (an OTLP root arriving last moves them all).
    # Neither reference is a foreign-key constraint: on PostgreSQL, triggers check them once per statement
    # (migration 0023), where a constraint checked and locked its row once per step -- a third of the server's
    # time importing many small traces (issue 19). Deleting goes through Django's cascade, as before.
    trace = models.ForeignKey(
        Trace, on_delete=models.CASCADE, related_name="steps", db_index=False, db_constraint=False
    )
    index = models.PositiveIntegerField()  # 0-based, the source's own order
    agent = models.ForeignKey(
        Agent, null=True, blank=True, on_delete=models.SET_NULL, related_name="steps", db_constraint=False
    )
    speaker = models.CharField(max_length=300, blank=True)  # the original speaker string, unnormalised
    recipient = models.CharField(max_length=200, blank=True)  # "Orchestrator (-> WebSurfer)" -> "WebSurfer"
    kind = models.CharField(max_length=16, choices=StepKind.choices, default=StepKind.MESSAGE)
    content = models.TextField(blank=True)
    tool_name = models.CharField(max_length=200, blank=True)
    tool_arguments = models.JSONField(null=True, blank=True)
    # Span trees: the index of the parent step in the same trace. An index, not a foreign key, so a trace's steps
    # are written in batches without a second pass to fill in ids.
    parent_index = models.PositiveIntegerField(null=True, blank=True)
    span_id = models.CharField(max_length=200, blank=True)  # the source's span/observation/run id
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    input_tokens = models.PositiveIntegerField(null=True, blank=True)
    output_tokens = models.PositiveIntegerField(null=True, blank=True)
    raw = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["trace", "index"]
        constraints = [
            # Also the index behind the viewer's windowed step query (trace, index range).
            models.UniqueConstraint(fields=["trace", "index"], name="step_unique_index_per_trace"),
            models.CheckConstraint(condition=Q(kind__in=StepKind.values), name="step_kind_valid"),
            models.CheckConstraint(condition=Q(parent_index__lt=F("index")), name="step_parent_precedes"),
        ]
        indexes = [
            # Label files (TRAIL) point at a span id: find the step built from that span. Only steps that have
            # one: most imported steps do not (Who&When, AgentRx), and keeping their empty ids in this index was
            # a sixth of the server's time writing them (issue 19, migration 0024). A query for a given span id
            # implies the condition; one that joins on span ids says it (``otlp_build``).
            # Led by the span id: the OTLP builder's probes compare the trace as ``trace_id + 0`` so that this is
            # the only index they can use, whatever the planner's statistics say (migration 0025).
            models.Index(fields=["span_id", "trace"], name="step_span_trace", condition=~Q(span_id="")),
        ]

    def __str__(self) -> str:
        return f"step {self.index} of trace {self.trace_id}"


class StepSearch(models.Model):
    """A step's full-text document (``to_tsvector('simple', content)``), stored apart from the step.

    Computing it is most of what writing a step costs (an expression index on ``tracing_step`` recomputed it for
    every imported step, and again for every step an OTLP renumbering moved, since a moved row is a new row version).
    Here it is written once per step by the indexer, after the steps are committed, and never touched when a step's
    index changes. Steps are never edited in place (a changed span becomes a new step with a new id), so a document
    never goes stale; one left by a deleted step no longer joins a step and is dropped with its trace.
    """

    # No constraint and no cascade from Step: deleting a trace's steps stays one fast DELETE (a cascade would make
    # Django load every step first); the trace's cascade removes the documents.
    step = models.OneToOneField(
        Step, primary_key=True, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    # Deleted with its trace by Django's cascade. No database constraint: its check at the indexer's commit took a
    # share lock on the trace table, the one lock the indexer's lock timeout could not bound (a test database's
    # TRUNCATE deadlocked with it); the indexer only writes documents of traces it holds locked.
    trace = models.ForeignKey(Trace, on_delete=models.CASCADE, db_constraint=False, related_name="+")
    document = SearchVectorField()

    def __str__(self) -> str:
        return f"search document of step {self.step_id}"


class TraceSearch(models.Model):
    """The lexemes of all of a trace's step documents (``StepSearch``), positions stripped: one row per trace.

    "Which traces have a step matching one word" then reads one document per trace instead of one per step: a word
    in every trace of a 20,000-trace project matched 341,536 step documents, whose table (the documents inline)
    had to be read whole for their trace ids. The indexer writes both tables in the same transaction. With
    ``exact``, the document holds exactly the lexemes of the trace's step documents, so a trace matches a word (or
    words joined by "or") exactly when one of its steps does; without it (an OTLP build deleted some of its step
    documents, or the lexemes outgrew a tsvector's 1 MB and ``document`` is NULL), the document may hold more and
    the trace's steps are checked. A trace's steps not indexed yet are read from their text by ``tracing.search``,
    as before.
    """

    # Deleted with its trace by Django's cascade; no database constraint, like StepSearch (the indexer's lock timeout).
    trace = models.OneToOneField(
        Trace, primary_key=True, on_delete=models.CASCADE, db_constraint=False, related_name="+"
    )
    project = models.ForeignKey(
        Project, on_delete=models.DO_NOTHING, db_constraint=False, db_index=False, related_name="+"
    )
    document = SearchVectorField(null=True)
    exact = models.BooleanField(default=True)

    class Meta:
        indexes = [
            # The traces a search must check step by step: few, and found without reading the others.
            models.Index(fields=["project"], condition=Q(exact=False), name="tracesearch_inexact"),
        ]

    def __str__(self) -> str:
        return f"search document of trace {self.trace_id}"


class PendingLabel(models.Model):
    """Labels that arrived in a file of their own before the trace they describe (matched on external id).

    They are attached when a trace with that external id is imported into the project, then deleted.
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="pending_labels")
    target_external_id = models.CharField(max_length=200)
    source_format = models.CharField(max_length=40)
    labels = models.JSONField()  # [ParsedGold as dict]
    metadata = models.JSONField(default=dict, blank=True)  # ParsedLabels.metadata, merged into the trace's
    job = models.ForeignKey(IngestJob, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            # Run at every trace import: pending labels for this project and external id.
            models.Index(fields=["project", "target_external_id"], name="pendinglabel_target"),
        ]

    def __str__(self) -> str:
        return f"label for {self.target_external_id} ({self.source_format})"


class LabelSource(models.TextChoices):
    IMPORTED = "imported", "Imported"
    ANNOTATOR = "annotator", "Annotator"
    ADJUDICATED = "adjudicated", "Adjudicated"
    INJECTED = "injected", "Fault injected"
    COUNTERFACTUAL = "counterfactual", "Counterfactual"


class GoldLabel(models.Model):
    """Who made the decisive error, and at which step. The agent name is kept as given even when no step of
    the trace carries it (Who&When has such labels), so the label always round-trips to its source."""

    trace = models.ForeignKey(Trace, on_delete=models.CASCADE, related_name="gold_labels")
    agent = models.ForeignKey(Agent, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    agent_name = models.CharField(max_length=200)
    step_index = models.PositiveIntegerField()
    reason = models.TextField(blank=True)
    category = models.CharField(max_length=80, blank=True)
    source = models.CharField(max_length=16, choices=LabelSource.choices, default=LabelSource.IMPORTED)
    confidence = models.FloatField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.CheckConstraint(condition=Q(source__in=LabelSource.values), name="goldlabel_source_valid"),
            models.CheckConstraint(
                condition=Q(confidence__isnull=True) | Q(confidence__gte=0, confidence__lte=1),
                name="goldlabel_confidence_range",
            ),
        ]
        indexes = [
            # The trace list's "has gold label" filter and the viewer's header: labels of one trace.
            models.Index(fields=["trace", "source"], name="goldlabel_trace_source"),
        ]

    def __str__(self) -> str:
        return f"{self.agent_name} @ step {self.step_index} ({self.source})"


class ErrorLabel(models.Model):
    """One labelled error of a trace, as its dataset lists it: TRAIL names several per run, each with a category,
    a span, evidence and an impact. ``GoldLabel`` stays the one label attribution is scored against; the error
    that decides it is flagged ``decisive`` here, and the others are kept beside it instead of being dropped.

    Which error is decisive: the one the source marks (AgentRx's root cause, Who&When's single label); for TRAIL,
    which marks none, the earliest HIGH-impact error in run order (lowest step index), else the earliest error at
    all. Errors whose span is not in the trace keep their span id with no step and are never decisive.
    """

    trace = models.ForeignKey(Trace, on_delete=models.CASCADE, related_name="error_labels")
    step_index = models.PositiveIntegerField(null=True, blank=True)  # None: not tied to a step of the trace
    span_id = models.CharField(max_length=200, blank=True)  # the source's location, kept even when unresolved
    agent = models.ForeignKey(Agent, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    agent_name = models.CharField(max_length=200, blank=True)
    family = models.CharField(
        max_length=40, blank=True
    )  # taxonomy family of the category: TRAIL, MAST, AgentRx
    category = models.CharField(max_length=120, blank=True)
    description = models.TextField(blank=True)
    evidence = models.TextField(blank=True)
    impact = models.CharField(max_length=16, blank=True)  # HIGH / MEDIUM / LOW as the source gives it
    source = models.CharField(max_length=16, choices=LabelSource.choices, default=LabelSource.IMPORTED)
    decisive = models.BooleanField(default=False)
    position = models.PositiveIntegerField(default=0)  # order in the label file
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["trace", "position", "id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(source__in=LabelSource.values), name="errorlabel_source_valid"
            ),
            # One decisive error per trace and source, as there is one gold label per trace and source.
            models.UniqueConstraint(
                fields=["trace", "source"],
                condition=Q(decisive=True),
                name="errorlabel_one_decisive_per_source",
            ),
        ]
        indexes = [
            # The viewer's step list: the labelled errors of one trace, by step.
            models.Index(fields=["trace", "step_index"], name="errorlabel_trace_step"),
        ]

    def __str__(self) -> str:
        where = f"step {self.step_index}" if self.step_index is not None else (self.span_id or "the run")
        return f"{self.category or 'error'} at {where}{' (decisive)' if self.decisive else ''}"


class ApiToken(models.Model):
    """A project's key for the REST API and the OTLP receiver. Only a hash is stored; the token is shown once.

    Tokens are 32 random bytes, so a plain SHA-256 is enough (a slow password hash buys nothing against
    guessing a 256-bit secret, and would cost every API request tens of milliseconds).
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=12, unique=True)  # shown in the UI and used to find the row
    token_hash = models.CharField(max_length=64)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"


class OtlpSpan(models.Model):
    """A span received by the OTLP endpoint, kept so spans of one trace arriving in many requests can be merged.

    Accepting writes the span's own bytes (``payload``) and the few columns the builder needs to place it; the
    builder (``services/otlp_build.py``) turns spans with ``built`` false into steps and fills the placement columns,
    so later spans find their parent's path, agent and step without re-reading the trace."""

    # No index of its own (a lone one only slowed every accept): the indexes below that serve a project's reads start
    # with it; the builder's probes by span id or parent id use indexes led by the id (migration 0025).
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="otlp_spans", db_index=False)
    trace_id = models.CharField(max_length=64)
    span_id = models.CharField(max_length=32)
    resource = models.JSONField(default=dict)  # {"attributes": {...}} of the resource that sent it
    scope = models.JSONField(default=dict)
    span = models.JSONField(null=True, blank=True)  # legacy rows (before 0009): the span in OTLP/JSON shape
    received_at = models.DateTimeField(auto_now=True)
    # --- incremental building (migration 0009) ---
    # The protobuf Span message as sent (PostgreSQL compresses large values itself); JSON spans stay in ``span``.
    payload = models.BinaryField(null=True, blank=True)
    encoding = models.PositiveSmallIntegerField(
        default=0
    )  # 0: ``span`` (OTLP/JSON), 1: ``payload`` (protobuf)
    parent_span_id = models.CharField(max_length=32, blank=True)
    start_ns = models.BigIntegerField(null=True, blank=True)
    service = models.CharField(max_length=200, blank=True)  # the resource's service.name
    error = models.BooleanField(default=False)
    built = models.BooleanField(default=False)  # its current payload is reflected in the trace's steps
    # Filled by the builder. ``path``: (start, span id) of every ancestor and itself, 16 bytes each, so that sorting
    # by path is the viewer's depth-first, start-ordered step order and a subtree is a path prefix.
    path = models.BinaryField(null=True, blank=True)
    agent = models.CharField(max_length=200, blank=True)  # the acting agent (own, else inherited)
    step_span = models.CharField(max_length=32, blank=True)  # nearest span (itself or above) that has steps
    step_count = models.PositiveSmallIntegerField(default=0)  # steps built from it (0, 1 or 2)
    shown_leaf = models.BooleanField(
        default=False
    )  # a silent leaf shown by its attributes (a child removes it)

    class Meta:
        constraints = [
            # Re-sent spans replace themselves (upsert on this key); also the builder's lookups by span id, which
            # is why the span id leads: a probe that cannot use the project (``project_id + 0``) has this index
            # alone to use, whatever the planner's statistics say (``otlp_build._SPANS_BY``).
            models.UniqueConstraint(fields=["span_id", "trace_id", "project"], name="otlpspan_unique_span"),
        ]
        indexes = [
            # The builder: the children of the spans a build takes (waiting for a parent that just arrived); led by
            # the parent's id for the same reason as the unique key above.
            models.Index(fields=["parent_span_id"], condition=~Q(parent_span_id=""), name="otlpspan_parent"),
            # The builder: steps after an insertion point (path range) and a re-sent span's subtree (path prefix).
            models.Index(fields=["project", "trace_id", "path"], name="otlpspan_trace_path"),
            # The builder: a trace's spans not built yet (a scan of the trace's rows would grow with it); the reaper:
            # spans received long ago and still not built (their build was lost).
            models.Index(
                fields=["project", "trace_id", "received_at"],
                condition=Q(built=False),
                name="otlpspan_unbuilt",
            ),
        ]

    def __str__(self) -> str:
        return f"span {self.span_id} of trace {self.trace_id}"


class OtlpPendingBuild(models.Model):
    """One queued build per trace: the receiver enqueues a build only when it inserts this row, the build deletes it
    when it starts, so a burst of requests touching one trace yields one build (debounce). ``queued_at`` is the
    heartbeat the reaper checks: a row older than any build may take lost its task, which is sent again."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    trace_id = models.CharField(max_length=64)
    queued_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "trace_id"], name="otlppendingbuild_one_per_trace"),
        ]
        indexes = [
            # The reaper: markers whose task went missing.
            models.Index(fields=["queued_at"], name="otlppendingbuild_queued"),
        ]

    def __str__(self) -> str:
        return f"build of trace {self.trace_id}"


class AuditEvent(models.Model):
    """Who changed what that matters for security: memberships, API tokens, provider keys and hooks, exports, schema
    promotions. Written by the service that makes the change, in its transaction; never edited, never deleted with
    the actor (the username is copied)."""

    project = models.ForeignKey(
        Project, null=True, blank=True, on_delete=models.CASCADE, related_name="audit_events"
    )
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_name = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=60)  # "membership.added", "token.created", "export.created"...
    target = models.CharField(max_length=300, blank=True)  # what it was done to, in words
    details = models.JSONField(default=dict, blank=True)  # never secrets
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["project", "-created_at"], name="audit_project_recent")]

    def __str__(self) -> str:
        return f"{self.actor_name or 'system'} {self.action} {self.target}"
