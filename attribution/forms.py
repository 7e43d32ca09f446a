from __future__ import annotations

from typing import Any

from django import forms

from tracing.forms import TraceScopeField
from tracing.selectors import TraceFilters

from . import outbound
from .methods import all_methods
from .models import AutoAttribute, ProjectAttribution, ProjectLlmSettings


def method_choices() -> list[tuple[str, str]]:
    return [
        (m.name, m.label if m.needs_llm or "offline" in m.label.lower() else f"{m.label} (offline)")
        for m in all_methods()
    ]


def default_method(project: Any) -> str | None:
    """The method the project's Attribute buttons preselect (its models page sets it), if it is still a method."""
    chosen = (
        ProjectAttribution.objects.filter(project=project).values_list("default_method", flat=True).first()
    )
    return chosen if chosen in {m.name for m in all_methods()} else None


def _preselect(form: forms.Form, project: Any) -> None:
    # The field's initial yields to an explicit initial={"method": ...} (a campaign preselects counterfactual).
    if project is not None and (chosen := default_method(project)):
        form.fields["method"].initial = chosen


class StartRunForm(forms.Form):
    method = forms.ChoiceField(widget=forms.Select(attrs={"aria-label": "Attribution method"}))
    with_ground_truth = forms.BooleanField(
        required=False, initial=True, label="Show the task's answer to the method"
    )
    # The trace set, as the trace list filters it (empty: every trace of the project).
    q = forms.CharField(required=False, max_length=200)
    gold = forms.ChoiceField(
        required=False, choices=[("", "any"), ("yes", "with gold label"), ("no", "without")]
    )
    format = forms.CharField(required=False, max_length=40)
    # Or every filter of the trace list, carried by its "Attribute them" link (then the three above are not shown).
    scope = TraceScopeField()

    def __init__(self, *args: Any, project: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["method"].choices = method_choices()
        _preselect(self, project)

    def trace_filters(self) -> tuple[TraceFilters, str]:
        """The valid form's trace set as selector filters, and in words (the run's description)."""
        data = self.cleaned_data
        if data.get("scope") is not None:
            return data["scope"].filters(), f"trace list: {data['scope'].describe()}"
        filters = TraceFilters(q=data["q"], has_gold=data["gold"], source_format=data["format"])
        described = ", ".join(
            f"{k}={v}"
            for k, v in (("search", data["q"]), ("gold", data["gold"]), ("format", data["format"]))
            if v
        )
        return filters, described or "all traces"


class EvaluationForm(forms.Form):
    method = forms.ChoiceField(required=False)
    split = forms.ChoiceField(
        required=False,
        choices=[("all", "all labelled traces"), ("dev", "dev split"), ("heldout", "held-out split")],
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["method"].choices = method_choices()


class LlmSettingsForm(forms.ModelForm):
    # Keys and headers are a few hundred characters at most; a megabyte pasted by mistake is refused, not stored.
    api_key = forms.CharField(
        required=False,
        max_length=4096,
        widget=forms.PasswordInput(render_value=False),
        label="API key",
        help_text="Stored encrypted. Leave empty to keep the current key.",
    )
    clear_api_key = forms.BooleanField(required=False, label="Remove the stored key")
    replay_hook_auth = forms.CharField(
        required=False,
        max_length=4096,
        widget=forms.PasswordInput(render_value=False),
        label="Replay hook Authorization header",
        help_text='Sent as the Authorization header, e.g. "Bearer …". Stored encrypted; '
        "leave empty to keep the current one.",
    )

    class Meta:
        model = ProjectLlmSettings
        fields = [
            "model",
            "api_base",
            "temperature",
            "timeout_seconds",
            "max_retries",
            "context_tokens",
            "max_output_tokens",
            "input_price_per_mtok",
            "output_price_per_mtok",
            "spending_cap_usd",
            "run_max_tokens",
            "run_max_cost_usd",
            "replay_hook_url",
        ]
        labels = {
            "api_base": "API base URL",
            "timeout_seconds": "Timeout (seconds)",
            "context_tokens": "Context window (tokens)",
            "max_output_tokens": "Maximum output per request (tokens)",
            "input_price_per_mtok": "Input price ($ per million tokens)",
            "output_price_per_mtok": "Output price ($ per million tokens)",
            "spending_cap_usd": "Project spending cap ($)",
            "run_max_tokens": "Token budget per run",
            "run_max_cost_usd": "Money budget per run ($)",
        }
        help_texts = {
            "model": "A litellm model string: openai/gpt-4o-mini, anthropic/claude-3-5-sonnet-latest, ollama/llama3.1 …",
            "api_base": "For Ollama, vLLM or any OpenAI-compatible server, e.g. http://127.0.0.1:11434 (no key needed: "
            "a placeholder is sent)",
            "context_tokens": "Empty: litellm's model map when it knows the model, else 8,192. For vLLM, the server's "
            "--max-model-len; for Ollama, num_ctx.",
            "max_output_tokens": "max_tokens of each request. Empty: 1,500 (the model's own maximum if smaller).",
            "input_price_per_mtok": "Empty: litellm's price when it knows the model. A self-hosted model: 0 or your "
            "own cost.",
            "spending_cap_usd": "Checked before every request from its counted tokens and maximum output; needs a "
            "known price.",
            "run_max_tokens": "Checked before every request: prompt tokens plus the maximum output. Works for every "
            "model, priced or not.",
            "run_max_cost_usd": "Checked before every request; needs a known price.",
            "replay_hook_url": "Your system's replay endpoint (docs/replay-and-injection.md: HTTP replay hook contract); counterfactual "
            "replay uses it for this project's traces that are not sandbox runs.",
        }

    # The page's groups, two columns on a wide screen; every field is in exactly one (tests/attribution check).
    fieldsets = (
        (
            "Model & endpoint",
            (
                "model",
                "api_base",
                "api_key",
                "clear_api_key",
                "temperature",
                "timeout_seconds",
                "max_retries",
            ),
        ),
        ("Limits", ("context_tokens", "max_output_tokens")),
        ("Prices", ("input_price_per_mtok", "output_price_per_mtok")),
        ("Budgets", ("spending_cap_usd", "run_max_tokens", "run_max_cost_usd")),
        ("Replay hook", ("replay_hook_url", "replay_hook_auth")),
    )

    def grouped_fields(self) -> list[tuple[str, list[forms.BoundField]]]:
        return [(legend, [self[name] for name in names]) for legend, names in self.fieldsets]

    def clean_api_base(self) -> str:
        return _outbound_url(self.cleaned_data.get("api_base") or "")

    def clean_replay_hook_url(self) -> str:
        return _outbound_url(self.cleaned_data.get("replay_hook_url") or "")

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        prices = (data.get("input_price_per_mtok"), data.get("output_price_per_mtok"))
        if (prices[0] is None) != (prices[1] is None):
            self.add_error(
                "output_price_per_mtok" if prices[1] is None else "input_price_per_mtok",
                "Give both prices (input and output) or neither.",
            )
        priced = prices[0] is not None and prices[1] is not None
        if not priced and data.get("model") and model_facts(data["model"])["prices"] is None:
            # A money cap on a model nobody can price would never trigger: refuse it instead of promising it.
            for field in ("spending_cap_usd", "run_max_cost_usd"):
                if data.get(field) is not None:
                    self.add_error(
                        field,
                        "No price is known for this model, so a money cap cannot be enforced: give "
                        "its input and output prices, or use the token budget per run.",
                    )
        for field in ("context_tokens", "max_output_tokens"):
            if data.get(field) is not None and data[field] < 256:
                self.add_error(field, "At least 256 tokens.")
        context, output = data.get("context_tokens"), data.get("max_output_tokens")
        if context and output and output * 2 > context:
            self.add_error("max_output_tokens", "At most half the context window: the trace needs the rest.")
        return data


def model_facts(model: str) -> dict[str, Any]:
    """What litellm's model map knows of ``model``: context window, maximum output and prices per million tokens
    (None for each it does not know)."""
    from .llm import model_limits, model_prices

    context, output = model_limits(model) if model else (None, None)
    prices = model_prices(model) if model else None
    return {
        "context": context,
        "output": output,
        "prices": None if prices is None else (prices[0] * 1e6, prices[1] * 1e6),
    }


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
    """Sandbox runs to generate: failed ones of sandbox v2 (the default: its replayer does not know the fault, so a
    counterfactual verdict on them is earned) or of v1 (kept for regression: v1's replayer rebuilds the fault from
    the trace's name), and fault-free v1 runs for injection campaigns to break."""

    runs = forms.IntegerField(min_value=0, max_value=500, initial=10)
    version = forms.TypedChoiceField(
        choices=[
            (2, "v2: the replayer does not know the fault"),
            (1, "v1: the fault is in the run's name (regression)"),
        ],
        coerce=int,
        empty_value=2,
        required=False,
        initial=2,
        label="Sandbox",
    )
    mode = forms.ChoiceField(
        choices=[("injected", "injected faults"), ("natural", "natural failures")],
        required=False,
        initial="injected",
        label="Failures",
        help_text="v2: runs chosen to carry an injected scenario, or runs that failed on their own",
    )
    clean = forms.IntegerField(
        min_value=0,
        max_value=500,
        initial=0,
        required=False,
        help_text="fault-free runs (they succeed), for injection campaigns",
    )
    seed = forms.IntegerField(min_value=0, max_value=10**9, initial=100)

    # (No ``clean`` method: the field of that name would be shadowed by it.) A post without them means the defaults.
    def clean_version(self) -> int:
        return self.cleaned_data.get("version") or 2

    def clean_mode(self) -> str:
        return self.cleaned_data.get("mode") or "injected"


class CampaignForm(forms.Form):
    """An injection campaign over the project's successful traces, chosen with the trace list's filters."""

    q = forms.CharField(required=False, max_length=200, label="Search")
    format = forms.CharField(required=False, max_length=40)
    faults_per_trace = forms.IntegerField(min_value=1, max_value=20, initial=3)
    seed = forms.IntegerField(min_value=0, max_value=10**9, initial=0)
    writer = forms.ChoiceField(
        choices=[("perturb", "offline perturbations"), ("llm", "LLM-written (project model)")],
        initial="perturb",
        label="Faults in real traces",
    )
    max_replays = forms.IntegerField(min_value=1, max_value=1_000_000, required=False)
    max_tokens = forms.IntegerField(min_value=1, required=False)
    max_cost = forms.DecimalField(
        min_value=0, max_digits=10, decimal_places=4, required=False, label="Max cost ($)"
    )

    def __init__(self, *args: Any, project: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.project = project

    def clean_max_cost(self) -> Any:
        # The model form's rule (shared with ``inject_faults --max-cost``): no money cap on a model nobody can price.
        from .services import campaign_cost_cap_refusal

        value = self.cleaned_data.get("max_cost")
        if value is None or self.project is None:
            return value
        if (refusal := campaign_cost_cap_refusal(project=self.project)) is not None:
            raise forms.ValidationError(f"{refusal}: give its prices on the model page, or use Max tokens.")
        return value


class AutoAttributeForm(forms.Form):
    """Whether traces that arrive are attributed automatically, and by which method (the project's default method:
    the one every Attribute form preselects too)."""

    mode = forms.ChoiceField(choices=AutoAttribute.choices, label="Attribute new traces automatically")
    method = forms.ChoiceField(label="with")

    def __init__(self, *args: Any, project: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["method"].choices = method_choices()
        if project is not None:
            settings = ProjectAttribution.objects.filter(project=project).first()
            self.fields["mode"].initial = settings.auto_attribute if settings else AutoAttribute.OFF
            self.fields["method"].initial = default_method(project) or "heuristic"
