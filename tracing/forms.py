from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django import forms
from django.http import QueryDict

from . import extensions
from .formats import all_formats
from .long_text import PARTS
from .models import DuplicatePolicy, Outcome, Project, Role

if TYPE_CHECKING:
    from .selectors import TraceFilters


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault(
            "widget", MultipleFileInput(attrs={"accept": ".json,.jsonl,.ndjson,.zip,.txt,.log"})
        )
        # An empty file must fail alone, as an import error next to the others, not reject the whole upload.
        kwargs.setdefault("allow_empty_file", True)
        super().__init__(*args, **kwargs)

    def clean(self, data: Any, initial: Any = None) -> list[Any]:
        single = super().clean
        if isinstance(data, (list, tuple)) and data:
            return [single(d, initial) for d in data]
        if isinstance(data, (list, tuple)):
            data = None  # lets FileField say "This field is required."
        return [single(data, initial)]


class FolderPathsField(forms.Field):
    """The folder each uploaded file came from, in the files' order: a browser sends a dropped or chosen folder's
    files with their path inside it (``Hand-Crafted/7.json``), which the multipart file name cannot carry (Django
    keeps its last part). "" for a file that came by itself."""

    widget = forms.MultipleHiddenInput
    MAX_LENGTH = 500

    def to_python(self, value: Any) -> list[str]:
        if not value:
            return []
        if not isinstance(value, (list, tuple)):
            raise forms.ValidationError("The folder paths must be a list, one per file.")
        return [self._clean_one(str(v)) for v in value]

    def _clean_one(self, path: str) -> str:
        if len(path) > self.MAX_LENGTH or "\x00" in path:
            raise forms.ValidationError(
                f"A folder path is over {self.MAX_LENGTH} characters or holds a NUL byte."
            )
        parts = [p for p in path.replace("\\", "/").split("/") if p not in ("", ".")]
        if ".." in parts:
            raise forms.ValidationError(f"The folder path {path[:100]!r} climbs out of its folder ('..').")
        return "/".join(parts)


def format_choices() -> list[tuple[str, str]]:
    return [("", "Detect automatically")] + [(f.name, f.label) for f in all_formats()]


class UploadForm(forms.Form):
    files = MultipleFileField(label="Trace files")
    format = forms.ChoiceField(required=False, label="Format")
    # Traces whose content is already in the project: skipped and reported (the default), or imported again.
    duplicates = forms.ChoiceField(
        required=False,
        label="Already imported",
        choices=DuplicatePolicy.choices,
        initial=DuplicatePolicy.SKIP,
    )

    paths = FolderPathsField(required=False)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["format"].choices = format_choices()

    def clean_duplicates(self) -> str:
        return self.cleaned_data.get("duplicates") or DuplicatePolicy.SKIP

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if "files" in data and "paths" in data:
            try:
                data["names"] = upload_names(data["files"], data["paths"])
            except forms.ValidationError as exc:
                self.add_error("paths", exc)
        return data

    def names(self) -> list[str]:
        """Each file's name as the import records it (``upload_names``), in the files' order."""
        return self.cleaned_data["names"]


def upload_names(files: list[Any], paths: list[str]) -> list[str]:
    """Each uploaded file's name as the import records it: its path inside a dropped folder (``FolderPathsField``,
    cleaned), as ``import_traces`` names a folder's files, else its own name. Only the path's folders are taken:
    the file's name is always its own. ValidationError unless there is one path per file, or none."""
    if paths and len(paths) != len(files):
        raise forms.ValidationError(f"{len(paths)} folder paths came with {len(files)} files: one per file.")
    return [
        "/".join([*path.split("/")[:-1], f.name]) if path else f.name
        for f, path in zip(files, paths or [""] * len(files), strict=True)
    ]


def ordering_choices() -> list[tuple[str, str]]:
    from .selectors import ordering_keys

    return [("", "Newest import first")] + [
        (f"{sign}{key}", f"{key.capitalize()} {'descending' if sign else 'ascending'}")
        for key in ordering_keys()
        for sign in ("", "-")
    ]


# Source formats of traces Culprit makes itself rather than imports (no parser of that name): the sandboxes' runs and
# the fault-injected copies of traces that had no format; the trace list filters on them as on any other.
MADE_HERE_FORMATS = (
    ("sandbox", "Sandbox runs (made here)"),
    ("injected", "Fault-injected copies (made here)"),
)


class TraceFilterForm(forms.Form):
    """The trace list's filters, in the page's URL (bookmarkable) and in ``GET /api/traces``: one form, so both
    accept and refuse the same values with the same messages."""

    q = forms.CharField(
        required=False,
        max_length=200,
        label="Search",
        help_text="Names, tasks, ids and the content of every step",
    )
    agent = forms.CharField(required=False, max_length=200, label="Agent")
    outcome = forms.ChoiceField(
        required=False, label="Outcome", choices=[("", "Any outcome"), *Outcome.choices]
    )
    format = forms.ChoiceField(required=False, label="Format")
    has_gold = forms.ChoiceField(
        required=False,
        label="Gold label",
        choices=[("", "Any label"), ("yes", "Has gold label"), ("no", "No gold label")],
    )
    ordering = forms.ChoiceField(required=False, label="Sort")
    # The traces one upload made (the upload page links here): with the other filters, it travels into runs,
    # queues and exports as part of the scope.
    batch = forms.UUIDField(required=False, label="Upload", widget=forms.HiddenInput)
    page = forms.IntegerField(required=False, min_value=1)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.data.get("gold") and not self.data.get("has_gold"):  # the parameter's name in older bookmarks
            self.data = self.data.copy()
            self.data["has_gold"] = self.data["gold"]
        self.fields["format"].choices = (
            [("", "Any format")] + [(f.name, f.label) for f in all_formats()] + list(MADE_HERE_FORMATS)
        )
        self.fields["ordering"].choices = ordering_choices()
        # "from" is a Python keyword, so these two are added here rather than declared above.
        self.fields["from"] = forms.DateField(required=False, label="Started from", widget=DateInput())
        self.fields["to"] = forms.DateField(required=False, label="Started until", widget=DateInput())
        # Filters other apps add (attribution: has_verdict, verdict_vs_gold), validated like the ones above.
        self.extension_names: list[str] = []
        for ext in extensions.trace_list_extensions():
            for name, field in ext.filter_fields().items():
                self.fields[name] = field
                self.extension_names.append(name)

    @property
    def extension_fields(self) -> list[forms.BoundField]:
        return [self[name] for name in self.extension_names]

    @classmethod
    def parameter_names(cls) -> list[str]:
        """Every filter parameter, the extensions' included: what ``GET /api/traces`` hands to this form."""
        return [name for name in cls().fields if name != "page"]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("from") and data.get("to") and data["from"] > data["to"]:
            self.add_error("to", "The end of the date range must not be before its start.")
        return data

    def filters(self) -> TraceFilters:
        """The valid fields as selector filters (call after ``is_valid()``; invalid fields are left out)."""
        from .selectors import TraceFilters

        data = self.cleaned_data
        return TraceFilters(
            q=data.get("q") or "",
            has_gold=data.get("has_gold") or "",
            source_format=data.get("format") or "",
            outcome=data.get("outcome") or "",
            agent=(data.get("agent") or "").strip(),
            started_from=data.get("from"),
            started_to=data.get("to"),
            ordering=data.get("ordering") or "",
            batch=data.get("batch"),
            extra={name: data[name] for name in self.extension_names if data.get(name) not in (None, "")},
        )

    @classmethod
    def for_scope(cls, scope: str) -> TraceFilterForm:
        """The trace list's filters from its query string: the *scope* an "Attribute them" or "Review them" link
        carries from the trace list to the run and queue forms (bound; call ``is_valid()``)."""
        return cls(QueryDict(scope))

    @classmethod
    def saved_scope(cls, scope: str) -> TraceFilterForm:
        """A scope stored with a queue or an export, read back with its fields cleaned: it was checked when it was
        saved, so a filter the trace list no longer knows is left out, as the list itself leaves out an invalid one."""
        form = cls.for_scope(scope)
        form.is_valid()
        return form

    def describe(self) -> str:
        """The active filters in words, for a run's description and a queue's source (after ``is_valid()``)."""
        data = self.cleaned_data
        parts = [f"search “{data['q']}”"] if data.get("q") else []
        for name in ("outcome", "format", "has_gold"):
            if data.get(name):
                field = self.fields[name]
                parts.append(f"{field.label.lower()}: {dict(field.choices).get(data[name], data[name])}")
        if (data.get("agent") or "").strip():
            parts.append(f"agent {data['agent'].strip()}")
        if data.get("from") or data.get("to"):
            parts.append(f"started {data.get('from') or '…'} to {data.get('to') or '…'}")
        if data.get("batch"):
            parts.append(f"uploaded together (upload {str(data['batch'])[:8]})")
        for name in self.extension_names:
            if data.get(name) not in (None, ""):
                field = self.fields[name]
                choices = dict(getattr(field, "choices", ()) or ())
                parts.append(f"{(field.label or name).lower()}: {choices.get(data[name], data[name])}")
        return ", ".join(parts) or "every trace"

    def error_text(self) -> str:
        """The errors in one sentence, naming the parameters: the API's 400 answer."""
        return "; ".join(f"{name}: {' '.join(errors)}" for name, errors in self.errors.items())


SCOPE_MAX_LENGTH = 2000  # characters of a trace-list query string a run or queue form carries as its scope


class TraceScopeField(forms.CharField):
    """A hidden field holding the trace list's query string (see ``TraceFilterForm.for_scope``): the traces a run or
    a queue is about. Cleans to the valid bound filter form, or None when empty; bad filters are refused with the
    trace list's own messages."""

    widget = forms.HiddenInput

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(required=False, max_length=SCOPE_MAX_LENGTH, **kwargs)

    def clean(self, value: Any) -> TraceFilterForm | None:  # type: ignore[override]
        text = super().clean(value).lstrip("?")
        if not text:
            return None
        form = TraceFilterForm.for_scope(text)
        if not form.is_valid():
            raise forms.ValidationError(f"The trace list's filters are not valid: {form.error_text()}")
        return form


class TraceDeleteForm(forms.Form):
    """Confirming the deletion of a trace-list scope's traces (the view reads the scope, as the trace list does).
    ``expected`` is the count the confirmation showed: when traces arrived or went since, the page asks again."""

    expected = forms.IntegerField(min_value=0, widget=forms.HiddenInput)
    confirm = forms.BooleanField(
        required=True,
        error_messages={"required": "Tick the box to confirm: deleted traces cannot be brought back."},
    )


class DateInput(forms.DateInput):
    input_type = "date"


class StepJumpForm(forms.Form):
    page = forms.IntegerField(required=False, min_value=1)
    step = forms.IntegerField(required=False, min_value=0)


class LiveForm(forms.Form):
    """What a page showed when it was drawn, so the live banner can say what came since: the newest trace's id
    (a project's list) or the trace's step count (a trace page)."""

    after = forms.IntegerField(required=False, min_value=0, max_value=2**63 - 1)
    steps = forms.IntegerField(required=False, min_value=0, max_value=2**31 - 1)


class StepWindowForm(forms.Form):
    """Which long text of a step to fetch (``part``: its content when not given, its raw JSON, or the root's
    output, the run's final answer), from character ``offset`` (0-based; the start when not given)."""

    part = forms.ChoiceField(
        required=False,
        choices=[(p, p) for p in PARTS],
        error_messages={"invalid_choice": f"The part must be one of: {', '.join(PARTS)}."},
    )

    offset = forms.IntegerField(
        required=False,
        min_value=0,
        max_value=2_000_000_000,
        error_messages={
            "invalid": "The offset must be a whole number.",
            "min_value": "The offset must be 0 or more.",
            "max_value": "The offset is past any step's text.",
        },
    )


class ProjectForm(forms.ModelForm):
    class Meta:
        model = Project
        fields = ["name", "description"]
        widgets = {"description": forms.Textarea(attrs={"rows": 2})}


class MemberForm(forms.Form):
    username = forms.CharField(max_length=150)
    role = forms.ChoiceField(choices=Role.choices)

    def clean_username(self) -> str:
        from django.contrib.auth import get_user_model

        username = self.cleaned_data["username"].strip()
        if not get_user_model().objects.filter(username=username).exists():
            raise forms.ValidationError(f"There is no user called {username!r}.")
        return username


class TokenForm(forms.Form):
    """Create a token (a name), or revoke one (``revoke``: its id; a post that names the field revokes, never
    creates)."""

    name = forms.CharField(max_length=100, required=False, initial="exporter")
    revoke = forms.IntegerField(required=False, min_value=1, max_value=2**63 - 1)

    @property
    def revoking(self) -> bool:
        return "revoke" in self.data

    def clean(self) -> dict:
        data = super().clean()
        if self.revoking and data.get("revoke") is None and "revoke" not in self.errors:
            self.add_error("revoke", "Say which token to revoke.")
        return data
