from django.urls import path  # noqa: F401  (collector routes are added with the collectors)

urlpatterns: list = []
