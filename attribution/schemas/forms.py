from __future__ import annotations

from django import forms

from ..models import SchemaScope, SchemaStatus
from ..taxonomy import CATEGORIES


class SchemaSearchForm(forms.Form):
    q = forms.CharField(required=False, max_length=200)
    status = forms.ChoiceField(required=False, choices=[("", "any status"), *SchemaStatus.choices])


class SchemaEditForm(forms.Form):
    """The prose and the scope only: the structured detection stays the aggregate of verified cases."""

    title = forms.CharField(max_length=200)
    context = forms.CharField(required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 3}))
    detection_text = forms.CharField(
        required=False,
        max_length=2000,
        label="Detection heuristic (in words)",
        widget=forms.Textarea(attrs={"rows": 3}),
    )
    category = forms.ChoiceField(required=False)
    scope = forms.ChoiceField(
        choices=SchemaScope.choices,
        help_text="Shared schemas are read by other projects whose owners opted in.",
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["category"].choices = [("", "none")] + [
            (c.code, f"{c.code}: {c.label}") for c in CATEGORIES.values()
        ]


class RetireForm(forms.Form):
    reason = forms.CharField(required=False, max_length=500)


class LibraryForm(forms.Form):
    use_shared_library = forms.BooleanField(required=False, label="Also use schemas other projects shared")
