"""API authentication: personal tokens in a header, or HTTP basic with username and token.

Basic auth is what Schema Registry clients send (`basic.auth.user.info = user:token`).
"""

from __future__ import annotations

import base64
import binascii

from django.urls import reverse
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from portal.services import api_token_check


def _token_refused(request, check) -> exceptions.AuthenticationFailed:
    """A 401 that says why (unknown, revoked, expired…) and, for a token that was ours, where to get a new one."""
    message = check.message
    if check.refusal in ("revoked", "expired"):
        message += f" Create a new one at {request.build_absolute_uri(reverse('api_tokens'))}."
    return exceptions.AuthenticationFailed(message, code=f"token_{check.refusal}")


class ApiTokenAuthentication(authentication.BaseAuthentication):
    """`Authorization: Token <token>` (or `Bearer <token>`)."""

    keywords = ("token", "bearer")

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1").strip()
        if not header:
            return None
        scheme, _, value = header.partition(" ")
        if scheme.lower() not in self.keywords:
            return None
        value = value.strip()
        if not value or " " in value:
            raise exceptions.AuthenticationFailed("Malformed Authorization header: expected 'Token <token>'.")
        check = api_token_check(value)
        if check.user is None:
            raise _token_refused(request, check)
        return check.user, value

    def authenticate_header(self, request) -> str:
        return "Token"


class TokenBasicAuthentication(authentication.BaseAuthentication):
    """HTTP basic where the password is an API token (never the user's sign-in password)."""

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1").strip()
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as err:
            raise exceptions.AuthenticationFailed("Malformed basic credentials.") from err
        username, sep, token = decoded.partition(":")
        if not sep:
            raise exceptions.AuthenticationFailed("Malformed basic credentials: expected user:token.")
        check = api_token_check(token)
        if check.user is None and check.refusal in ("revoked", "expired", "user_disabled"):
            raise _token_refused(request, check)
        if check.user is None or check.user.get_username() != username:
            raise exceptions.AuthenticationFailed("Invalid username or API token.")
        return check.user, token

    def authenticate_header(self, request) -> str:
        return 'Basic realm="chatorbit-registry"'


class ApiTokenAuthenticationScheme(OpenApiAuthenticationExtension):
    """Describes the token header in the OpenAPI document (the Authorize button of /api/v1/docs/)."""

    target_class = "portal.authentication.ApiTokenAuthentication"
    name = "apiToken"

    def get_security_definition(self, auto_schema):
        return {"type": "apiKey", "in": "header", "name": "Authorization",
                "description": "`Token <token>`; create one on the portal's API tokens page (/account/tokens/)."}


class TokenBasicAuthenticationScheme(OpenApiAuthenticationExtension):
    """Describes the registry's basic auth in the OpenAPI document."""

    target_class = "portal.authentication.TokenBasicAuthentication"
    name = "registryBasic"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "basic",
                "description": "Username and API token, as Schema Registry clients send "
                               "`basic.auth.user.info = <username>:<token>`."}
