from django.urls import path, re_path

from contracts import registry_apis as r

# Subjects contain dots; `str` matches anything but '/'. Trailing slashes are optional for clients.
urlpatterns = [
    path("", r.RegistryRootApi.as_view()),
    path("subjects", r.SubjectListApi.as_view()),
    path("subjects/<str:subject>", r.SubjectLookupApi.as_view()),
    path("subjects/<str:subject>/versions", r.SubjectVersionsApi.as_view()),
    path("subjects/<str:subject>/versions/<str:version>", r.SubjectVersionApi.as_view()),
    path("subjects/<str:subject>/versions/<str:version>/schema", r.SubjectVersionSchemaApi.as_view()),
    path("schemas/ids/<int:schema_id>", r.SchemaByIdApi.as_view()),
    path("schemas/ids/<int:schema_id>/subjects", r.SchemaSubjectsApi.as_view()),
    path("schemas/types", r.SchemaTypesApi.as_view()),
    path("compatibility/subjects/<str:subject>/versions/<str:version>", r.CompatibilityVersionApi.as_view()),
    path("compatibility/subjects/<str:subject>/versions", r.CompatibilitySubjectApi.as_view()),
    path("config/<str:subject>", r.SubjectConfigApi.as_view()),
    path("config", r.GlobalConfigApi.as_view()),
    re_path(r"^.*$", r.UnknownRegistryPathApi.as_view()),
]
