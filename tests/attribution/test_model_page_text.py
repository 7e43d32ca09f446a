"""The model settings page names the LLM judge methods in a readable sentence (it once read
"…(LLM), Hybrid: …(LLM), ) call this model")."""

from __future__ import annotations

import pytest
from django.urls import reverse

from attribution.methods import all_methods
from attribution.templatetags.attribution_extras import llm_method_names


def test_the_llm_methods_are_joined_as_a_sentence():
    names = llm_method_names(all_methods())
    assert names.count(" and ") == 1 and "(LLM)" not in names and ", )" not in names and not names.endswith(",")
    assert "Hybrid" in names and "Hybrid:" not in names and "Heuristic" not in names


@pytest.mark.django_db
def test_the_model_page_has_no_dangling_comma(owner_client, project):
    page = owner_client.get(reverse("attribution:llm_settings", args=[project.slug])).content.decode()
    assert f"The LLM judge methods ({llm_method_names(all_methods())}) call this model" in page
    assert ", ) call this model" not in page
