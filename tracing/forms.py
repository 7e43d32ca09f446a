from __future__ import annotations

from typing import Any

from django import forms

from .formats import all_formats
from .models import Project, Role


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("widget", MultipleFileInput(attrs={"accept": ".json,.jsonl,.ndjson,.zip,.txt,.log"}))
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


def format_choices() -> list[tuple[str, str]]:
    return [("", "Detect automatically")] + [(f.name, f.label) for f in all_formats()]


class UploadForm(forms.Form):
    files = MultipleFileField(label="Trace files")
    format = forms.ChoiceField(required=False, label="Format")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["format"].choices = format_choices()


class TraceFilterForm(forms.Form):
    q = forms.CharField(required=False, max_length=200, label="Search")
    gold = forms.ChoiceField(
        required=False, choices=[("", "Any label"), ("yes", "Has gold label"), ("no", "No gold label")]
    )
    format = forms.ChoiceField(required=False)
    page = forms.IntegerField(required=False, min_value=1)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["format"].choices = [("", "Any format")] + [(f.name, f.label) for f in all_formats()]


class StepJumpForm(forms.Form):
    page = forms.IntegerField(required=False, min_value=1)
    step = forms.IntegerField(required=False, min_value=0)


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
    name = forms.CharField(max_length=100, required=False, initial="exporter")
    revoke = forms.IntegerField(required=False)
