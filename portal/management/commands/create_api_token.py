from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from portal.services import api_token_create
from portal.token_rules import TokenRequestError


class Command(BaseCommand):
    help = ("Create an API token for USERNAME and print it (and nothing else). The token is shown only once. "
            "For bootstrapping from the server: people create, list and revoke their own tokens on the "
            "portal's API tokens page (/account/tokens/).")

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="cli", help="A label to tell tokens apart (default: cli).")

    def handle(self, *args, username: str, name: str, **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user named '{username}'.")
        if not user.is_active:
            raise CommandError(f"User '{username}' is disabled.")
        try:
            _, token = api_token_create(user=user, name=name)
        except TokenRequestError as err:
            raise CommandError(str(err)) from err
        self.stdout.write(token)
