from __future__ import annotations

from django.urls import path

from django_app import views

urlpatterns = [
    path("signup", views.signup),
    path("tasks/<int:task_id>", views.task),
]
