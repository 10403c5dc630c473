from django.contrib.auth import views as auth_views
from django.urls import path

from web import views

urlpatterns = [
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout-page"),
    path("weddings/", views.my_weddings, name="my-weddings"),
    path("weddings/<int:wedding_id>/", views.wedding_day, name="wedding-day"),
]
