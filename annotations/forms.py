from __future__ import annotations

from typing import Any

from django import forms

from tracing.models import LabelSource

from .models import ExportFormat
from .selectors import ExportFilters


class ExportForm(forms.Form):
    """The dataset builder: which labelled traces, which split, which format."""

    format = forms.ChoiceField(choices=ExportFormat.choices, initial=ExportFormat.WHOWHEN_JSONL)
    sources = forms.MultipleChoiceField(choices=LabelSource.choices, initial=list(LabelSource.values),
                                        widget=forms.CheckboxSelectMultiple, label="Label sources")
    verified_only = forms.BooleanField(required=False, label="Verified only (annotated or adjudicated labels)")
    min_agreement = forms.FloatField(required=False, min_value=0, max_value=1, label="Minimum agreement",
                                     widget=forms.NumberInput(attrs={"step": "0.05", "placeholder": "any"}))
    date_from = forms.DateField(required=False, label="Imported from", widget=forms.DateInput(attrs={"type": "date"}))
    date_to = forms.DateField(required=False, label="Imported until", widget=forms.DateInput(attrs={"type": "date"}))
    seed = forms.IntegerField(initial=0, min_value=0, max_value=2**31 - 1, label="Split seed")
    test_percent = forms.IntegerField(initial=20, min_value=0, max_value=100, label="Test split %")

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("date_from") and data.get("date_to") and data["date_from"] > data["date_to"]:
            self.add_error("date_to", "The end date is before the start date.")
        return data

    def filters(self) -> ExportFilters:
        data = self.cleaned_data
        return ExportFilters(sources=list(data["sources"]), verified_only=data["verified_only"],
                             min_agreement=data["min_agreement"], date_from=data["date_from"], date_to=data["date_to"],
                             seed=data["seed"], test_percent=data["test_percent"])
