"""The model settings page names the LLM judge methods in a readable sentence (it once read
"…(LLM), Hybrid: …(LLM), ) call this model")."""

from __future__ import annotations

import pytest
from django.urls import reverse

from attribution.methods import all_methods
from attribution.templatetags.attribution_extras import llm_method_names


def test_the_llm_methods_are_joined_as_a_sentence():
    names = llm_method_names(all_methods())
    assert (
        names.count(" and ") == 1 and "(LLM)" not in names and ", )" not in names and not names.endswith(",")
    )
    assert "Hybrid" in names and "Hybrid:" not in names and "Heuristic" not in names


@pytest.mark.django_db
def test_the_model_page_has_no_dangling_comma(owner_client, project):
    page = owner_client.get(reverse("attribution:llm_settings", args=[project.slug])).content.decode()
    assert f"The LLM judge methods ({llm_method_names(all_methods())}) call this model" in page
    assert ", ) call this model" not in page


def test_every_model_setting_sits_in_exactly_one_group():
    from attribution.forms import LlmSettingsForm

    grouped = [name for _, names in LlmSettingsForm.fieldsets for name in names]
    assert sorted(grouped) == sorted(LlmSettingsForm().fields) and len(grouped) == len(set(grouped))


@pytest.mark.django_db
def test_the_model_page_groups_its_fields_and_shows_their_errors_in_place(owner_client, project):
    url = reverse("attribution:llm_settings", args=[project.slug])
    page = owner_client.get(url).content.decode()
    legends = [part.split("</legend>")[0] for part in page.split("<legend>")[1:]]
    assert legends == ["Model &amp; endpoint", "Limits", "Prices", "Budgets", "Replay hook"]
    limits = page[page.index("<legend>Limits</legend>") : page.index("<legend>Prices</legend>")]
    assert 'name="context_tokens"' in limits and 'name="max_output_tokens"' in limits
    response = owner_client.post(
        url, {"model": "openai/x", "context_tokens": "100", "input_price_per_mtok": "1"}
    )
    assert response.status_code == 400
    html = response.content.decode()
    limits = html[html.index("<legend>Limits</legend>") : html.index("<legend>Prices</legend>")]
    assert 'class="field has-error"' in limits and "At least 256 tokens." in limits
    assert "Give both prices (input and output) or neither." in html
