from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth import get_user_model
from django.http import QueryDict
from django.utils import timezone

from attribution.taxonomy import is_known
from tracing.forms import TraceScopeField
from tracing.models import LabelSource, Role

from .exporters import DEFAULT_FORMAT, Exporter, all_exporters, format_choices
from .models import Assignment, QueueSource, ReviewQueue, TaxonomyFamily
from .selectors import (
    AGREEMENT_CHOICES,
    DEFAULT_LIMIT,
    DEFAULT_THRESHOLD,
    ITEM_STATUSES,
    MAX_LIMIT,
    ErrorCandidate,
    ExportFilters,
    ItemFilters,
)
from .services.queues import ErrorSpec


class ItemFilterForm(forms.Form):
    """The queue page's item-list filters (GET, so a filtered list can be bookmarked)."""

    status = forms.ChoiceField(required=False, choices=ITEM_STATUSES)
    agreement = forms.ChoiceField(required=False, choices=AGREEMENT_CHOICES)
    assignee = forms.CharField(required=False, max_length=150, label="Annotator")
    q = forms.CharField(required=False, max_length=200, label="Trace name")

    def filters(self) -> ItemFilters:
        data = self.cleaned_data if self.is_valid() else {}
        return ItemFilters(
            status=data.get("status", ""),
            agreement=data.get("agreement", ""),
            assignee=data.get("assignee", "").strip(),
            q=data.get("q", "").strip(),
        )


class QueueForm(forms.Form):
    name = forms.CharField(max_length=120)
    instructions = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}))
    source = forms.ChoiceField(choices=QueueSource.choices, initial=QueueSource.NO_GOLD)
    # The trace-list search, for source "search" (same fields as the trace list's filters).
    q = forms.CharField(required=False, max_length=200, label="Search")
    gold = forms.ChoiceField(
        required=False, choices=[("", "any"), ("yes", "with gold label"), ("no", "without")]
    )
    format = forms.CharField(required=False, max_length=40)
    # Or every filter of the trace list, carried by its "Review them in a queue" link (the source is then a search,
    # and the page does not show the fields the scope stands for).
    scope = TraceScopeField()
    SCOPED_OUT = ("source", "q", "gold", "format", "threshold")
    threshold = forms.FloatField(
        required=False, min_value=0, max_value=1, initial=DEFAULT_THRESHOLD, label="Confidence below"
    )
    limit = forms.IntegerField(
        min_value=1, max_value=MAX_LIMIT, initial=DEFAULT_LIMIT, label="At most (traces)"
    )
    overlap = forms.IntegerField(min_value=1, max_value=10, initial=2, label="Annotators per item")
    assignment = forms.ChoiceField(choices=Assignment.choices, initial=Assignment.ANYONE)
    annotators = forms.ModelMultipleChoiceField(
        queryset=get_user_model().objects.none(), required=False, widget=forms.CheckboxSelectMultiple
    )
    blind = forms.BooleanField(required=False, label="Blind: hide the methods' verdicts")
    taxonomy = forms.ChoiceField(choices=TaxonomyFamily.choices, initial=TaxonomyFamily.AGENT_ERROR)
    step_tolerance = forms.IntegerField(
        min_value=0, max_value=50, initial=1, label="Step agreement within ±k"
    )

    def __init__(self, *args: Any, project: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.project = project
        self.fields["annotators"].queryset = (
            get_user_model()
            .objects.filter(memberships__project=project, memberships__role__in=["owner", "annotator"])
            .order_by("username")
        )

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        if ReviewQueue.objects.filter(project=self.project, name=name).exists():
            raise forms.ValidationError("This project already has a queue with that name.")
        return name

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("assignment") == Assignment.NAMED and not data.get("annotators"):
            self.add_error("annotators", "Name at least one annotator, or let anyone label.")
        if data.get("scope") is not None:
            data["source"] = QueueSource.SEARCH
        return data

    def filter_params(self) -> dict[str, Any]:
        data = self.cleaned_data
        params: dict[str, Any] = {"limit": data["limit"]}
        if data.get("scope") is not None:
            params["scope"] = data["scope"].data.urlencode()
        elif data["source"] == QueueSource.SEARCH:
            params.update(q=data["q"], gold=data["gold"], format=data["format"])
        if data["source"] == QueueSource.LOW_CONFIDENCE:
            params["threshold"] = DEFAULT_THRESHOLD if data["threshold"] is None else data["threshold"]
        return params

    def queue_create(self, user: Any) -> ReviewQueue:
        """Create and fill the valid form's queue (the queues page and ``manage.py create_queue``)."""
        from .services import queue_create

        data = self.cleaned_data
        return queue_create(
            project=self.project,
            user=user,
            name=data["name"],
            source=data["source"],
            filter=self.filter_params(),
            overlap=data["overlap"],
            assignment=data["assignment"],
            annotators=data["annotators"],
            blind=data["blind"],
            instructions=data["instructions"],
            taxonomy=data["taxonomy"],
            step_tolerance=data["step_tolerance"],
        )


class QueueSettingsForm(forms.ModelForm):
    """An owner changes a live queue. Overlap may grow (new copies are added to every item) but not shrink: answers
    already given would lose their copy."""

    lease_minutes = forms.IntegerField(min_value=1, max_value=24 * 60, label="Lease (minutes)")

    class Meta:
        model = ReviewQueue
        fields = ["name", "instructions", "overlap", "assignment", "annotators", "blind", "step_tolerance"]
        widgets = {
            "instructions": forms.Textarea(attrs={"rows": 3}),
            "annotators": forms.CheckboxSelectMultiple,
        }
        labels = {
            "overlap": "Annotators per item",
            "blind": "Blind: hide the methods' verdicts",
            "step_tolerance": "Step agreement within ±k",
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        queue = self.instance
        self.fields["annotators"].queryset = (
            get_user_model()
            .objects.filter(memberships__project=queue.project, memberships__role__in=["owner", "annotator"])
            .order_by("username")
        )
        self.fields["annotators"].required = False
        self.fields["overlap"].min_value = queue.overlap
        self.fields["overlap"].widget.attrs["min"] = queue.overlap
        self.fields["lease_minutes"].initial = max(1, queue.lease_seconds // 60)

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        taken = ReviewQueue.objects.filter(project=self.instance.project, name=name).exclude(
            pk=self.instance.pk
        )
        if taken.exists():
            raise forms.ValidationError("This project already has a queue with that name.")
        return name

    def clean_overlap(self) -> int:
        overlap = self.cleaned_data["overlap"]
        current = (
            ReviewQueue.objects.filter(pk=self.instance.pk).values_list("overlap", flat=True).first() or 1
        )
        if overlap < current:
            raise forms.ValidationError(
                f"Overlap can grow but not shrink below {current}: answers already given "
                "would lose their copy. Create a new queue instead."
            )
        if overlap > 10:
            raise forms.ValidationError("At most 10 annotators per item.")
        return overlap

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("assignment") == Assignment.NAMED and not data.get("annotators"):
            self.add_error("annotators", "Name at least one annotator, or let anyone label.")
        return data


MAX_NOTE_CHARS = 5000  # a further error's note: a paragraph, not a document


class AnswerForm(forms.Form):
    """The decisive error as the labelling screen (or an adjudicating owner) sends it."""

    step_index = forms.IntegerField(
        min_value=0, error_messages={"required": "Mark the decisive step first (Enter)."}
    )
    agent_name = forms.CharField(required=False, max_length=200)
    category = forms.CharField(required=False, max_length=80)
    reason = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}))
    lead_time_ms = forms.IntegerField(required=False, min_value=0)

    @classmethod
    def showing(cls, answer: dict[str, list[str]]) -> AnswerForm:
        """The form bound to a given answer (``selectors.answer_data``: each field's values as the screen sends
        them), to show it again for a revision."""
        data = QueryDict(mutable=True)
        for name, values in answer.items():
            data.setlist(name, values)
        return cls(data)

    def clean_category(self) -> str:
        code = self.cleaned_data["category"].strip()
        if code and not is_known(code):
            raise forms.ValidationError(f"Unknown category {code!r}.")
        return code

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        data["further"] = self._further_errors()
        return data

    def _further_errors(self) -> list[ErrorSpec]:
        """The further errors, sent as parallel lists (one ``error_step``, ``error_agent``, ``error_category`` and
        ``error_note`` per error, in the order listed). Whether the step and agent exist is the service's to say."""
        columns = [
            self.data.getlist(f"error_{name}") if hasattr(self.data, "getlist") else []
            for name in ("step", "agent", "category", "note")
        ]
        if len({len(column) for column in columns}) > 1:
            raise forms.ValidationError(
                "The further errors arrived incomplete; reload the page and try again."
            )
        errors: list[ErrorSpec] = []
        for position, (step, agent, category, note) in enumerate(zip(*columns, strict=True), start=1):
            step, category = step.strip(), category.strip()
            if not (step.isascii() and step.isdigit()):
                raise forms.ValidationError(f"Further error {position} has no step.")
            if category and not is_known(category):
                raise forms.ValidationError(f"Further error {position}: unknown category {category!r}.")
            if len(agent) > 200 or len(note) > MAX_NOTE_CHARS:
                raise forms.ValidationError(f"Further error {position} is too long.")
            errors.append(
                ErrorSpec(
                    step_index=int(step), agent_name=agent.strip(), category=category, note=note.strip()
                )
            )
        return errors

    def further_rows(self) -> list[ErrorSpec]:
        """The further errors to show again after a refused submit (as sent, unchecked)."""
        try:
            return self._further_errors()
        except forms.ValidationError:
            return []

    def cleaned_data_for_submit(self) -> dict[str, Any]:
        data = self.cleaned_data
        return {
            "step_index": data["step_index"],
            "agent_name": data["agent_name"],
            "category": data["category"],
            "reason": data["reason"],
            "lead_time_ms": data.get("lead_time_ms") or 0,
            "further": data.get("further", []),
        }


class DecisionForm(forms.Form):
    """An owner's decision over every labelled error of a trace: which one is decisive, which others to keep."""

    decisive = forms.ChoiceField(error_messages={"required": "Pick the decisive error."})
    keep = forms.MultipleChoiceField(required=False)
    reason = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))

    def __init__(self, *args: Any, candidates: list[ErrorCandidate], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.candidates = {c.key: c for c in candidates}
        choices = [(c.key, c.origin) for c in candidates]
        self.fields["decisive"].choices = choices
        self.fields["keep"].choices = choices

    def decision(self) -> dict[str, Any]:
        """``item_resolve``'s arguments: the decisive error, and the kept ones (in the page's order) beside it."""
        data = self.cleaned_data
        decisive = self.candidates[data["decisive"]]
        kept = [c for key, c in self.candidates.items() if key in data["keep"] and key != decisive.key]
        return {
            "step_index": decisive.step_index,
            "agent_name": decisive.agent_name,
            "category": decisive.category,
            "reason": data["reason"].strip() or decisive.note,
            "family": decisive.family,
            "further": [ErrorSpec(c.step_index, c.agent_name, c.category, c.note, c.family) for c in kept],
        }


class StepForm(forms.Form):
    page = forms.IntegerField(required=False, min_value=1)
    step = forms.IntegerField(required=False, min_value=0)


class ExportForm(forms.Form):
    """The dataset builder: which labelled traces, which split, which format."""

    # The registry's formats, read when the form is built (a callable), so a new exporter shows up here by itself.
    format = forms.ChoiceField(choices=format_choices, initial=DEFAULT_FORMAT)
    sources = forms.MultipleChoiceField(
        choices=LabelSource.choices,
        initial=list(LabelSource.values),
        widget=forms.CheckboxSelectMultiple,
        label="Label sources",
    )
    verified_only = forms.BooleanField(
        required=False, label="Verified only (annotated or adjudicated labels)"
    )
    min_agreement = forms.FloatField(
        required=False,
        min_value=0,
        max_value=1,
        label="Minimum agreement",
        widget=forms.NumberInput(attrs={"step": "0.05", "placeholder": "any"}),
    )
    date_from = forms.DateField(
        required=False, label="Imported from", widget=forms.DateInput(attrs={"type": "date"})
    )
    date_to = forms.DateField(
        required=False, label="Imported until", widget=forms.DateInput(attrs={"type": "date"})
    )
    seed = forms.IntegerField(initial=0, min_value=0, max_value=2**31 - 1, label="Split seed")
    test_percent = forms.IntegerField(initial=20, min_value=0, max_value=100, label="Test split %")
    # Only the traces the trace list shows (every filter of it), carried by its "Export them" link.
    scope = TraceScopeField()

    @property
    def exporters(self) -> list[Exporter]:
        """Every format with its description, listed beside the choice."""
        return all_exporters()

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("date_from") and data.get("date_to") and data["date_from"] > data["date_to"]:
            self.add_error("date_to", "The end date is before the start date.")
        return data

    def filters(self) -> ExportFilters:
        data = self.cleaned_data
        return ExportFilters(
            sources=list(data["sources"]),
            verified_only=data["verified_only"],
            min_agreement=data["min_agreement"],
            date_from=data["date_from"],
            date_to=data["date_to"],
            seed=data["seed"],
            test_percent=data["test_percent"],
            scope=data["scope"].data.urlencode() if data.get("scope") is not None else "",
        )


class InviteForm(forms.Form):
    """An owner names a person by username or e-mail address, and the role they get."""

    who = forms.CharField(max_length=254, label="Username or e-mail")
    role = forms.ChoiceField(choices=Role.choices, initial=Role.ANNOTATOR)

    def __init__(self, *args: Any, project: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.project = project

    def clean_who(self) -> str:
        from django.contrib.auth.validators import UnicodeUsernameValidator
        from django.core.validators import validate_email

        from .models import Invitation

        who = self.cleaned_data["who"].strip()
        if "@" in who:
            validate_email(who)
        else:
            UnicodeUsernameValidator()(who)
            if len(who) > 150:
                raise forms.ValidationError("A username has at most 150 characters.")
        User = get_user_model()
        members = User.objects.filter(memberships__project=self.project)
        if members.filter(username__iexact=who).exists() or (
            "@" in who and members.filter(email__iexact=who).exists()
        ):
            raise forms.ValidationError(
                "This person is already a member; change their role in the list above."
            )
        pending = Invitation.objects.filter(
            project=self.project,
            accepted_at__isnull=True,
            revoked_at__isnull=True,
            expires_at__gt=timezone.now(),
        )
        if pending.filter(username__iexact=who).exists() or pending.filter(email__iexact=who).exists():
            raise forms.ValidationError(
                "This person already has an open invitation; revoke it to send a new one."
            )
        return who


class AcceptInvitationForm(forms.Form):
    """The invited person chooses a username (unless the owner chose it) and a password, checked by Django's
    password validators against that username."""

    username = forms.CharField(max_length=150, help_text="Letters, digits and @ . + - _ only.")
    password1 = forms.CharField(
        label="Password", strip=False, widget=forms.PasswordInput(attrs={"autocomplete": "new-password"})
    )
    password2 = forms.CharField(
        label="Password again",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )

    def __init__(self, *args: Any, invitation: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.invitation = invitation
        from django.contrib.auth import password_validation

        self.fields["password1"].help_text = password_validation.password_validators_help_text_html()
        if invitation.username:
            self.fields["username"].initial = invitation.username
            self.fields[
                "username"
            ].disabled = True  # the owner named the account; the posted value is ignored
            self.fields["username"].help_text = "Chosen by the person who invited you."
        else:
            self.fields["username"].initial = invitation.email.split("@", 1)[0]

    def clean_username(self) -> str:
        from django.contrib.auth.validators import UnicodeUsernameValidator

        username = self.cleaned_data["username"].strip()
        UnicodeUsernameValidator()(username)
        if get_user_model().objects.filter(username__iexact=username).exists():
            raise forms.ValidationError("That username is taken; choose another.")
        return username

    def clean(self) -> dict[str, Any]:
        from django.contrib.auth import password_validation

        data = super().clean()
        first, second = data.get("password1"), data.get("password2")
        if first and second and first != second:
            self.add_error("password2", "The two passwords differ.")
        elif first:
            candidate = get_user_model()(username=data.get("username", ""), email=self.invitation.email)
            try:
                password_validation.validate_password(first, user=candidate)
            except forms.ValidationError as exc:
                self.add_error("password1", exc)
        return data


class TraceLabelForm(forms.Form):
    """A person's label from the trace page: a verdict to confirm, or a step (agent, category and reason optional).
    Whether the step, agent and category fit the trace is the service's to say."""

    verdict = forms.IntegerField(required=False, min_value=1)
    step_index = forms.IntegerField(required=False, min_value=0)
    agent_name = forms.CharField(required=False, max_length=200)
    category = forms.CharField(required=False, max_length=80)
    reason = forms.CharField(required=False, max_length=5000)

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("verdict") is None and data.get("step_index") is None:
            raise forms.ValidationError("Give the step with the decisive error, or confirm a verdict.")
        return data
