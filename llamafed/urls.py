"""Top-level URLs: the AO units each under their own base URL, the admin, the API and its schema, the site."""

from django.contrib import admin
from django.http import HttpRequest, JsonResponse
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from ao import api
from ao.urls import cu_urls, gateway_urls, mu_urls, su_urls
from web.urls import api_urlpatterns


def health(request: HttpRequest) -> JsonResponse:
    """Liveness probe."""
    return JsonResponse({"status": "ok"})


urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", health, name="health"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # The docs page loads its script from a URL of its own (no inline script, as the Content-Security-Policy asks).
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="schema", template_name="api_docs.html"),
         name="api-docs"),
    # POST to a unit without the trailing slash must not become a redirect: fetch would follow a
    # 301 with a GET and the client would think its message was sent.
    # The same for every unit's base URL: the scheduler publishes its URL without the slash (Scheduler-Location),
    # and AO's messenger follows only 307/308, so a 301 there would lose every message.
    path("ao/mu", api.mu_root),
    path("ao/mu/", include(mu_urls)),
    path("ao/su", api.su_root),
    path("ao/su/", include(su_urls)),
    path("ao/gateway/", include(gateway_urls)),
    path("ao/cu", api.cu_root),
    path("ao/cu/", include(cu_urls)),
    path("api/", include((api_urlpatterns, "web-api"))),
    path("", include("web.urls")),
]
