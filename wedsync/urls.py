from functools import partial

from django.contrib import admin
from django.urls import include, path
from django.views.generic import TemplateView
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from monitoring.capacity_views import capacity_page
from monitoring.node_views import NodeListView, node_drain_view, nodes_page
from monitoring.views import healthz, metrics, readyz
from monitoring.webhook_views import (
    EventWebhookDetailView,
    EventWebhookListView,
    EventWebhookResumeView,
    EventWebhookRotateView,
)
from presence.views import (
    AlertAckView,
    EmergencyResolveView,
    WeddingAlertListView,
    WeddingEmergencyListView,
    WeddingPresenceView,
)
from realtime.views import TicketCreateView, WeddingEventListView
from records.views import (
    ConflictListView,
    ConflictResolveView,
    RecordBatchView,
    RecordDetailView,
    RecordListView,
    WeddingStateView,
)
from wedsync.api.audit import AuditLogListView
from wedsync.api.members import MemberDetailView, MemberListView
from wedsync.api.views import LogoutView, TokenObtainView, TokenRefreshView
from wedsync.api.weddings import WeddingArchiveView, WeddingDetailView, WeddingListView

api_v1 = [
    path("auth/token/", TokenObtainView.as_view(), name="token-obtain"),
    path("auth/token/refresh/", TokenRefreshView.as_view(), name="token-refresh"),
    path("auth/logout/", LogoutView.as_view(), name="logout"),
    path("audit/", AuditLogListView.as_view(), name="audit"),
    path("nodes/", NodeListView.as_view(), name="nodes"),
    path("realtime/tickets/", TicketCreateView.as_view(), name="realtime-ticket"),
    path("weddings/", WeddingListView.as_view(), name="weddings"),
    path("weddings/<int:wedding_id>/", WeddingDetailView.as_view(), name="wedding"),
    path("weddings/<int:wedding_id>/archive/", WeddingArchiveView.as_view(), name="wedding-archive"),
    path("weddings/<int:wedding_id>/members/", MemberListView.as_view(), name="wedding-members"),
    path("weddings/<int:wedding_id>/events/", WeddingEventListView.as_view(), name="wedding-events"),
    path("weddings/<int:wedding_id>/members/<int:member_id>/", MemberDetailView.as_view(), name="wedding-member"),
    path("weddings/<int:wedding_id>/alerts/", WeddingAlertListView.as_view(), name="wedding-alerts"),
    path("weddings/<int:wedding_id>/alerts/<int:alert_id>/ack/", AlertAckView.as_view(), name="wedding-alert-ack"),
    path("weddings/<int:wedding_id>/emergencies/", WeddingEmergencyListView.as_view(), name="wedding-emergencies"),
    path(
        "weddings/<int:wedding_id>/emergencies/<int:emergency_id>/resolve/",
        EmergencyResolveView.as_view(),
        name="wedding-emergency-resolve",
    ),
    path("weddings/<int:wedding_id>/presence/", WeddingPresenceView.as_view(), name="wedding-presence"),
    path("weddings/<int:wedding_id>/webhooks/", EventWebhookListView.as_view(), name="wedding-webhooks"),
    path(
        "weddings/<int:wedding_id>/webhooks/<int:webhook_id>/",
        EventWebhookDetailView.as_view(),
        name="wedding-webhook",
    ),
    path(
        "weddings/<int:wedding_id>/webhooks/<int:webhook_id>/rotate-secret/",
        EventWebhookRotateView.as_view(),
        name="wedding-webhook-rotate-secret",
    ),
    path(
        "weddings/<int:wedding_id>/webhooks/<int:webhook_id>/resume/",
        EventWebhookResumeView.as_view(),
        name="wedding-webhook-resume",
    ),
    path("weddings/<int:wedding_id>/state/", WeddingStateView.as_view(), name="wedding-state"),
    # Before the kinds' routes, which would take "batch" for a kind.
    path("weddings/<int:wedding_id>/records/batch/", RecordBatchView.as_view(), name="wedding-records-batch"),
    path("weddings/<int:wedding_id>/records/<str:kind>/", RecordListView.as_view(), name="wedding-records"),
    path(
        "weddings/<int:wedding_id>/records/<str:kind>/<int:record_id>/",
        RecordDetailView.as_view(),
        name="wedding-record",
    ),
    path("weddings/<int:wedding_id>/conflicts/", ConflictListView.as_view(), name="wedding-conflicts"),
    path(
        "weddings/<int:wedding_id>/conflicts/<int:conflict_id>/resolve/",
        ConflictResolveView.as_view(),
        name="wedding-conflict-resolve",
    ),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("redoc/", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
]

urlpatterns = [
    path("", TemplateView.as_view(template_name="home.html"), name="home"),
    path("admin/board/", include("web.board.urls")),  # before the admin's own catch-all
    path("admin/nodes/", admin.site.admin_view(nodes_page), name="admin-nodes"),
    path("admin/capacity/", admin.site.admin_view(capacity_page), name="admin-capacity"),
    path(
        "admin/nodes/<path:node>/drain/",
        admin.site.admin_view(partial(node_drain_view, drain=True)),
        name="admin-node-drain",
    ),
    path(
        "admin/nodes/<path:node>/resume/",
        admin.site.admin_view(partial(node_drain_view, drain=False)),
        name="admin-node-resume",
    ),
    path("admin/", admin.site.urls),
    path("", include("web.urls")),
    path("api/v1/", include(api_v1)),
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("metrics", metrics, name="metrics"),
]

# Under /api/ even Django's own refusals answer in the API's error shape (wedsync/api/errors.py).
handler400 = "wedsync.api.errors.bad_request"
handler403 = "wedsync.api.errors.permission_denied"
handler404 = "wedsync.api.errors.page_not_found"
handler500 = "wedsync.api.errors.server_error"
