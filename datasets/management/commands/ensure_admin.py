"""Make sure someone can log in on a fresh install: create the first admin if there is none."""

from __future__ import annotations

import secrets
import sys

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create the first superuser: interactively on a terminal, else 'admin' with a generated password."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin")
        parser.add_argument("--no-input", action="store_true", help="Never prompt; generate a password.")

    def handle(self, *args, username: str, no_input: bool, **options):
        users = get_user_model()
        if users.objects.filter(is_superuser=True).exists():
            self.stdout.write(
                "An admin account exists; log in with it at http://127.0.0.1:8000/accounts/login/"
            )
            return
        if sys.stdin.isatty() and not no_input:
            self.stdout.write("No admin account yet: create one now.")
            call_command("createsuperuser", username=username, email="", interactive=True)
            return
        password = secrets.token_urlsafe(12)
        users.objects.create_superuser(username=username, email="", password=password)
        # Printed once and never stored in clear: the operator should change it after the first login.
        self.stdout.write(
            self.style.SUCCESS(f"Created admin account: username '{username}', password '{password}'")
        )
