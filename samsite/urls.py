from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.authtoken.views import obtain_auth_token

from samsite.views import health

urlpatterns = [
    path("health", health, name="health"),
    path("admin/", admin.site.urls),
    path("api/auth/token/", obtain_auth_token, name="api-token"),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    # The seed-compatible endpoints come first: /api/sam/... must not fall into the REST router.
    path("", include("legacy.urls")),
    path("api/", include("datasets.urls")),
    path("api/", include("datasets.jobs.urls")),
    path("api/", include("templates_app.urls")),
    path("", include("frontend.urls")),
]
