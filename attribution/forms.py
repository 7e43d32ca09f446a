from __future__ import annotations

from typing import Any

from django import forms

from . import outbound
from .methods import all_methods
from .models import ProjectAttribution, ProjectLlmSettings


def method_choices() -> list[tuple[str, str]]:
    return [(m.name, m.label if m.needs_llm or "offline" in m.label.lower() else f"{m.label} (offline)")
            for m in all_methods()]


def default_method(project: Any) -> str | None:
    """The method the project's Attribute buttons preselect (its models page sets it), if it is still a method."""
    chosen = ProjectAttribution.objects.filter(project=project).values_list("default_method", flat=True).first()
    return chosen if chosen in {m.name for m in all_methods()} else None


def _preselect(form: forms.Form, project: Any) -> None:
    # The field's initial yields to an explicit initial={"method": ...} (a campaign preselects counterfactual).
    if project is not None and (chosen := default_method(project)):
        form.fields["method"].initial = chosen


class StartRunForm(forms.Form):
    method = forms.ChoiceField()
    with_ground_truth = forms.BooleanField(required=False, initial=True, label="Show the task's answer to the method")
    # The trace set, as the trace list filters it (empty: every trace of the project).
    q = forms.CharField(required=False, max_length=200)
    gold = forms.ChoiceField(required=False, choices=[("", "any"), ("yes", "with gold label"), ("no", "without")])
    format = forms.CharField(required=False, max_length=40)

    def __init__(self, *args: Any, project: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["method"].choices = method_choices()
        _preselect(self, project)


class EvaluationForm(forms.Form):
    method = forms.ChoiceField(required=False)
    split = forms.ChoiceField(required=False, choices=[("all", "all labelled traces"), ("dev", "dev split"),
                                                       ("heldout", "held-out split")])

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["method"].choices = method_choices()


class LlmSettingsForm(forms.ModelForm):
    api_key = forms.CharField(required=False, widget=forms.PasswordInput(render_value=False),
                              help_text="Stored encrypted. Leave empty to keep the current key.")
    clear_api_key = forms.BooleanField(required=False, label="Remove the stored key")
    replay_hook_auth = forms.CharField(required=False, widget=forms.PasswordInput(render_value=False),
                                       label="Replay hook Authorization header",
                                       help_text='Sent as the Authorization header, e.g. "Bearer …". Stored encrypted; '
                                                 "leave empty to keep the current one.")

    class Meta:
        model = ProjectLlmSettings
        fields = ["model", "api_base", "temperature", "timeout_seconds", "max_retries", "spending_cap_usd",
                  "replay_hook_url"]
        help_texts = {
            "model": "A litellm model string: openai/gpt-4o-mini, anthropic/claude-3-5-sonnet-latest, ollama/llama3.1 …",
            "api_base": "For Ollama, vLLM or any OpenAI-compatible server, e.g. http://127.0.0.1:11434",
            "spending_cap_usd": "Runs stop with a clear message once the project's LLM spending reaches this.",
            "replay_hook_url": "Your system's replay endpoint (README: HTTP replay hook contract); counterfactual "
                               "replay uses it for this project's traces that are not sandbox runs.",
        }

    def clean_api_base(self) -> str:
        return _outbound_url(self.cleaned_data.get("api_base") or "")

    def clean_replay_hook_url(self) -> str:
        return _outbound_url(self.cleaned_data.get("replay_hook_url") or "")


def _outbound_url(url: str) -> str:
    """An http(s) URL the outbound policy accepts, checked when saved so the owner hears of it now; the worker checks
    again when it connects (the name may resolve elsewhere by then)."""
    if url:
        try:
            outbound.check_url(url)
        except outbound.OutboundRefused as exc:
            raise forms.ValidationError(str(exc)) from None
    return url


class SandboxForm(forms.Form):
    runs = forms.IntegerField(min_value=0, max_value=500, initial=10)
    clean = forms.IntegerField(min_value=0, max_value=500, initial=0, required=False,
                               help_text="fault-free runs (they succeed), for injection campaigns")
    seed = forms.IntegerField(min_value=0, max_value=10**9, initial=100)


class CampaignForm(forms.Form):
    """An injection campaign over the project's successful traces, chosen with the trace list's filters."""

    q = forms.CharField(required=False, max_length=200, label="Search")
    format = forms.CharField(required=False, max_length=40)
    faults_per_trace = forms.IntegerField(min_value=1, max_value=20, initial=3)
    seed = forms.IntegerField(min_value=0, max_value=10**9, initial=0)
    writer = forms.ChoiceField(choices=[("perturb", "offline perturbations"), ("llm", "LLM-written (project model)")],
                               initial="perturb", label="Faults in real traces")
    max_replays = forms.IntegerField(min_value=1, max_value=1_000_000, required=False)
    max_tokens = forms.IntegerField(min_value=1, required=False)
    max_cost = forms.DecimalField(min_value=0, max_digits=10, decimal_places=4, required=False, label="Max cost ($)")
