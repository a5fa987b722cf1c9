from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone

from detection.services import clips_purge_expired_audio, clips_with_expired_audio


class Command(BaseCommand):
    help = "Delete evidence audio past its retention date and any leftover audio of non-evidence clips."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="only count what would be deleted")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["dry_run"]:
            due = clips_with_expired_audio(now=timezone.now()).count()
            self.stdout.write(f"{due} audio file(s) would be deleted.")
            return
        self.stdout.write(f"{clips_purge_expired_audio()} audio file(s) deleted.")
