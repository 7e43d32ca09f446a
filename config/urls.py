from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView

from config import ratelimit
from config.views import healthz
from tracing.api import api
from tracing.otlp import receive_traces

urlpatterns = [
    # Before admin.site.urls, so the admin's sign-in is throttled like the site's.
    path("admin/login/", ratelimit.login_throttled(admin.site.login)),
    path("admin/", admin.site.urls),
    path(
        "accounts/login/",
        ratelimit.login_throttled(auth_views.LoginView.as_view(redirect_authenticated_user=True)),
        name="login",
    ),
    path("healthz", healthz, name="healthz"),
    # Browsers ask for /favicon.ico whatever the page's <link rel="icon"> says.
    path("favicon.ico", RedirectView.as_view(url=static("favicon.svg"), permanent=True)),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("api/", api.urls),
    path("v1/traces", receive_traces, name="otlp_traces"),
    path("attribution/", include("attribution.urls")),
    path("annotations/", include("annotations.urls")),
    path("", include("tracing.urls")),
]
