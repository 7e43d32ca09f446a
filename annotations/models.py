"""Review queues: people confirm or correct where a run went wrong, several of them per trace, with measured agreement.

A queue holds items (one per trace, unique, so adding a trace twice changes nothing). Each item has ``overlap``
copies, one ``Annotation`` row per copy created up front: a copy is the unit an annotator leases, labels and submits.
Leasing a copy is a row lock with ``SKIP LOCKED`` plus an expiry time, so two annotators can never hold the same copy,
a closed browser tab gives its copy back when the lease runs out, and one annotator never holds two copies of one
item (a unique constraint). Borrowed from Label Studio's schema (annotations with lead time, drafts, locks with
expiry), without its signals.

Decision: an annotator's answer stays here, in ``Annotation``; it is not a ``GoldLabel``. Gold is what the project
trusts, and one person's answer in a multi-annotator queue is not that yet. A ``GoldLabel`` is written when an item is
resolved: ``source="annotator"`` when every copy was submitted and all annotators agree (consensus, accepted by an
owner), ``source="adjudicated"`` when an owner decided a disagreement. ``QueueItem.resolved_label`` points at it.

Invitations: an owner invites a person who has no account yet (by username or e-mail) with a one-time link; following
it, the person chooses a username and password and joins the project in the role the owner gave. Only a SHA-256 of the
link's token is stored, so the table cannot be used to join; a link is used at most once (a conditional UPDATE claims
it) and expires. The model lives here because review is what people are invited for, and ``tracing`` owns no
invitation UI.

Dataset export: a ``DatasetExport`` row is one curated dataset file being built by a worker. The row, not the broker,
is the source of truth: a task re-delivered after a crash finds the row already finished and stops, or finds it
running and writes the file again from scratch into a temporary name that is renamed into place atomically, so a
download never sees half a file and a finished export is never written twice.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from tracing.jobs import Job, JobStatusChoices
from tracing.models import GoldLabel, Project, Role, Trace

from .exporters import get_exporter, validate_export_format


class QueueSource(models.TextChoices):
    NO_GOLD = "no_gold", "Traces without a gold label"
    LOW_CONFIDENCE = "low_confidence", "Low-confidence verdicts"
    DISAGREE = "disagree", "Methods that disagree"
    SEARCH = "search", "A trace-list search"


class Assignment(models.TextChoices):
    ANYONE = "anyone", "Any annotator of the project"
    NAMED = "named", "Only the annotators named here"


class TaxonomyFamily(models.TextChoices):
    AGENT_ERROR = "agent_error_taxonomy", "AgentErrorTaxonomy (modules and error types)"
    MAST = "mast", "MAST (14 failure modes)"
    TRAIL = "trail", "TRAIL categories"


class ReviewQueue(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="review_queues")
    name = models.CharField(max_length=120)
    instructions = models.TextField(blank=True)
    source = models.CharField(max_length=20, choices=QueueSource.choices, default=QueueSource.NO_GOLD)
    # How the traces were chosen, kept so "add matching traces" can run the same filter again later:
    # {"q", "gold", "format"} for a trace-list search, {"threshold"} for low confidence, and {"limit"}.
    filter = models.JSONField(default=dict, blank=True)
    overlap = models.PositiveSmallIntegerField(default=2)  # annotators per item
    assignment = models.CharField(max_length=10, choices=Assignment.choices, default=Assignment.ANYONE)
    annotators = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="assigned_queues")
    blind = models.BooleanField(default=False)  # hide the methods' verdicts from annotators
    taxonomy = models.CharField(
        max_length=32, choices=TaxonomyFamily.choices, default=TaxonomyFamily.AGENT_ERROR
    )
    step_tolerance = models.PositiveSmallIntegerField(default=1)  # the k of "step within ±k"
    lease_seconds = models.PositiveIntegerField(default=30 * 60)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="reviewqueue_unique_name_per_project"),
            models.CheckConstraint(
                condition=Q(overlap__gte=1, overlap__lte=10), name="reviewqueue_overlap_range"
            ),
            models.CheckConstraint(
                condition=Q(source__in=QueueSource.values), name="reviewqueue_source_valid"
            ),
            models.CheckConstraint(
                condition=Q(assignment__in=Assignment.values), name="reviewqueue_assignment_valid"
            ),
            models.CheckConstraint(
                condition=Q(lease_seconds__gte=60), name="reviewqueue_lease_at_least_a_minute"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class QueueItem(models.Model):
    queue = models.ForeignKey(ReviewQueue, on_delete=models.CASCADE, related_name="items")
    trace = models.ForeignKey(Trace, on_delete=models.CASCADE, related_name="+")
    # The gold label this item's annotations were resolved into (consensus or adjudication), once resolved.
    resolved_label = models.ForeignKey(
        GoldLabel, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    resolved_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            # Adding a trace twice is a no-op (bulk insert with ON CONFLICT DO NOTHING relies on it).
            models.UniqueConstraint(fields=["queue", "trace"], name="queueitem_unique_trace_per_queue"),
        ]

    def __str__(self) -> str:
        return f"{self.queue}: trace {self.trace_id}"


class CopyStatus(models.TextChoices):
    OPEN = "open", "Open"
    LEASED = "leased", "In progress"
    SUBMITTED = "submitted", "Submitted"


class Annotation(models.Model):
    """One copy of a queue item, and (once submitted) one annotator's answer for it."""

    item = models.ForeignKey(QueueItem, on_delete=models.CASCADE, related_name="copies")
    # Denormalised from the item: the claim query scans one queue's open copies without a join.
    queue = models.ForeignKey(ReviewQueue, on_delete=models.CASCADE, related_name="+")
    slot = models.PositiveSmallIntegerField()  # 0 .. overlap-1
    status = models.CharField(max_length=10, choices=CopyStatus.choices, default=CopyStatus.OPEN)
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="annotations"
    )
    leased_at = models.DateTimeField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    agent_name = models.CharField(max_length=200, blank=True)
    step_index = models.PositiveIntegerField(null=True, blank=True)
    category = models.CharField(max_length=80, blank=True)
    reason = models.TextField(blank=True)
    lead_time_ms = models.PositiveBigIntegerField(
        default=0
    )  # time on the labelling screen, summed over visits
    submitted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["item_id", "slot"]
        constraints = [
            models.UniqueConstraint(fields=["item", "slot"], name="annotation_unique_slot_per_item"),
            # One person never holds (or answers) two copies of the same item: overlap means distinct people.
            models.UniqueConstraint(
                fields=["item", "annotator"],
                condition=Q(annotator__isnull=False),
                name="annotation_one_copy_per_annotator",
            ),
            models.CheckConstraint(condition=Q(status__in=CopyStatus.values), name="annotation_status_valid"),
            models.CheckConstraint(
                condition=~Q(status="submitted") | Q(step_index__isnull=False, submitted_at__isnull=False),
                name="annotation_submitted_has_answer",
            ),
            models.CheckConstraint(
                condition=Q(status="open") | Q(annotator__isnull=False) | Q(status="submitted"),
                name="annotation_leased_has_annotator",
            ),
        ]
        indexes = [
            # The claim query: a queue's copies that are open or whose lease ran out, first item first.
            models.Index(fields=["queue", "status", "item", "slot"], name="annotation_claim"),
            # "Resume my lease": this person's leased copy.
            models.Index(fields=["annotator", "status"], name="annotation_annotator_status"),
            # The claim's "not an item I already hold or answered" anti-join, read in item order (a merge join).
            models.Index(fields=["annotator", "item"], name="annotation_annotator_item"),
        ]

    def __str__(self) -> str:
        return f"copy {self.slot} of item {self.item_id} ({self.status})"


class AnnotationError(models.Model):
    """A further error an annotator labelled besides the decisive one (which stays on ``Annotation``, so agreement is
    still measured on the decisive error alone). When the item is resolved from this annotation, each becomes an
    ``ErrorLabel`` with ``decisive=False`` beside the decisive one."""

    annotation = models.ForeignKey(Annotation, on_delete=models.CASCADE, related_name="further_errors")
    position = models.PositiveSmallIntegerField()  # the order the annotator listed them in
    step_index = models.PositiveIntegerField()
    agent_name = models.CharField(max_length=200, blank=True)
    category = models.CharField(max_length=80, blank=True)
    note = models.TextField(blank=True)

    class Meta:
        ordering = ["annotation_id", "position"]
        constraints = [
            models.UniqueConstraint(
                fields=["annotation", "position"], name="annotationerror_unique_position"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.category or 'error'} at step {self.step_index} ({self.agent_name})"


class Skip(models.Model):
    """An annotator passed on an item: its copy went back to the pool and this person is not offered it again."""

    item = models.ForeignKey(QueueItem, on_delete=models.CASCADE, related_name="skips")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["item", "annotator"], name="skip_unique_per_annotator")
        ]

    def __str__(self) -> str:
        return f"user {self.annotator_id} skipped item {self.item_id}"


class ExportStatus(JobStatusChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Exporting"
    SUCCEEDED = "succeeded", "Ready"
    FAILED = "failed", "Failed"


FINISHED_EXPORT_STATUSES = ExportStatus.finished_values()


class DatasetExport(Job):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="dataset_exports")
    # A name from the exporter registry (annotations/exporters), validated there: no choices and no database
    # constraint list the formats, so adding an exporter needs no migration.
    format = models.CharField(max_length=16, validators=[validate_export_format])
    # The builder's choices as given (label sources, verified only, minimum agreement, dates, seed, test share);
    # re-running an export from them selects the same cases and the same split.
    filters = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=ExportStatus.choices, default=ExportStatus.QUEUED)
    cases_total = models.PositiveIntegerField(default=0)
    steps_total = models.PositiveBigIntegerField(default=0)
    steps_done = models.PositiveBigIntegerField(default=0)
    # Relative to MEDIA_ROOT; empty until the finished file has been renamed into place.
    file = models.FileField(max_length=300, blank=True)
    file_size = models.PositiveBigIntegerField(default=0)
    manifest = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    # error, attempts, heartbeat_at and the timestamps: tracing.jobs.Job.

    PROGRESS_FIELDS = ("steps_done", "steps_total")

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=ExportStatus.values), name="datasetexport_status_valid"
            ),
        ]
        indexes = [
            # The builder page's list: one project's exports, newest first.
            models.Index(fields=["project", "-created_at"], name="datasetexport_project_recent"),
        ]

    def __str__(self) -> str:
        return f"export {self.pk} ({self.format}, {self.status})"

    @property
    def format_label(self) -> str:
        """The registry's name for the format; the raw name for a format no longer registered."""
        try:
            return get_exporter(self.format).label
        except KeyError:
            return self.format

    @property
    def filename(self) -> str:
        return self.file.name.rsplit("/", 1)[-1] if self.file else ""


class Invitation(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="invitations")
    # Who was invited: a username to create, an e-mail address, or both (at least one).
    username = models.CharField(max_length=150, blank=True)
    email = models.EmailField(blank=True)
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.ANNOTATOR)
    token_hash = models.CharField(
        max_length=64, unique=True
    )  # sha256 hex of the link's token; the lookup's index
    invited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=~Q(username="") | ~Q(email=""), name="invitation_names_someone"),
            models.CheckConstraint(condition=Q(role__in=Role.values), name="invitation_role_valid"),
        ]
        indexes = [
            # The members page's "pending invitations": one project's open ones.
            models.Index(fields=["project", "accepted_at", "revoked_at"], name="invitation_project_open"),
        ]

    def __str__(self) -> str:
        return f"invitation of {self.username or self.email} to {self.project_id} ({self.role})"

    @property
    def invitee(self) -> str:
        return self.username or self.email
