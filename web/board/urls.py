from django.contrib import admin
from django.urls import path

from web.board import views

urlpatterns = [
    path("", admin.site.admin_view(views.board), name="board"),
    path("weddings/<int:wedding_id>/card/", admin.site.admin_view(views.card), name="board-card"),
    path("weddings/<int:wedding_id>/presence/", admin.site.admin_view(views.presence_fragment), name="board-presence"),
    path(
        "weddings/<int:wedding_id>/alerts/<int:alert_id>/acknowledge/",
        admin.site.admin_view(views.alert_acknowledge_view),
        name="board-alert-acknowledge",
    ),
    path(
        "weddings/<int:wedding_id>/emergencies/<int:emergency_id>/resolve/",
        admin.site.admin_view(views.emergency_resolve_view),
        name="board-emergency-resolve",
    ),
]
