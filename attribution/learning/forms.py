"""The form of the models page: train a learned attributor from the verified labels of one or more projects."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth.models import AbstractBaseUser

from tracing.models import LabelSource, Project

from .services import DEFAULT_FOLDS


class TrainForm(forms.Form):
    name = forms.CharField(max_length=120, help_text="Training the same name again makes its next version.")
    projects = forms.ModelMultipleChoiceField(
        queryset=Project.objects.none(),
        label="Training projects",
        help_text="Projects whose verified labels it learns from.",
    )
    sources = forms.MultipleChoiceField(
        choices=LabelSource.choices,
        widget=forms.CheckboxSelectMultiple,
        initial=LabelSource.values,
        label="Label sources",
    )
    folds = forms.IntegerField(
        min_value=2, max_value=10, initial=DEFAULT_FOLDS, label="Cross-validation folds"
    )

    def __init__(
        self,
        *args: Any,
        user: AbstractBaseUser,
        project: Project,
        counts: dict[str, int] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        # Only projects the person belongs to: a label they cannot read must never shape a model they can.
        self.fields["projects"].queryset = Project.objects.filter(memberships__user=user).order_by("name")
        self.fields["projects"].initial = [project.pk]
        counts = counts or {}
        self.fields["sources"].choices = [
            (value, f"{label} ({counts.get(value, 0)} trace{'' if counts.get(value, 0) == 1 else 's'} here)")
            for value, label in LabelSource.choices
        ]


class RetrainForm(forms.Form):
    retrain_after = forms.IntegerField(
        min_value=0,
        max_value=100_000,
        label="Retrain the default model after",
        help_text="new labelled traces (0: never). A retrained version becomes the default once it is trained.",
    )
