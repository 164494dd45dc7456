"""The CI command line, served by the portal: teams' CI downloads one file and runs it.

`contracts/cli.py` is self-contained (standard library and `requests`), so the file served is that module
itself: what the portal's own tests run is what CI runs, and a portal upgrade upgrades the CLI with it.
"""

from __future__ import annotations

from pathlib import Path

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.views import APIView

from contracts import cli

CLI_FILENAME = "contracts_cli.py"


class CliDownloadApi(APIView):
    """Any signed-in person or API token may fetch it (the same as the check it calls)."""

    @extend_schema(
        operation_id="cli_download", summary="Download the CI command line (contracts_cli.py)",
        description="The single-file `contracts_cli.py check …` that CI runs against `/api/v1/contracts/{subject}"
                    "/check`; it needs Python 3.11+ and `requests` only. Exit codes: 0 compatible, 1 breaking, "
                    "2 could not check.",
        responses={(200, "text/x-python"): OpenApiResponse(OpenApiTypes.STR, description="The Python source.")},
    )
    def get(self, request):
        response = HttpResponse(Path(cli.__file__).read_bytes(), content_type="text/x-python; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{CLI_FILENAME}"'
        return response
