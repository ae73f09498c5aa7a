from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from samsite.api_root import ApiRootView
from samsite.auth_views import LoginView, TokenView, login_throttled
from samsite.views import health

urlpatterns = [
    path("health", health, name="health"),
    # The admin's and the browsable API's login forms get the same per-IP throttle as the site's (the lockout
    # applies to every login already: it is the authentication backend).
    path("admin/login/", login_throttled(admin.site.login)),
    path("admin/", admin.site.urls),
    path("api/", ApiRootView.as_view(), name="api-root"),
    path("api/auth/token/", TokenView.as_view(), name="api-token"),
    # Log in / log out links of the browsable API (session auth, for people exploring /api/ in a browser).
    path(
        "api/auth/login/",
        LoginView.as_view(template_name="rest_framework/login.html", redirect_authenticated_user=False),
    ),
    path("api/auth/", include("rest_framework.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    # The seed-compatible endpoints come first: /api/sam/... must not fall into the REST router.
    path("", include("legacy.urls")),
    path("api/", include("datasets.urls")),
    path("api/", include("datasets.jobs.urls")),
    path("api/", include("templates_app.urls")),
    path("", include("frontend.urls")),
]

handler400 = "samsite.views.bad_request"
handler403 = "samsite.views.permission_denied"
handler404 = "samsite.views.page_not_found"
handler500 = "samsite.views.server_error"
