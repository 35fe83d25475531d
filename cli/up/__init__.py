"""`soulspot up`'s machinery: the plan read from docker-compose.yml, the process runner, the
folders and logs it keeps, and the summary it prints."""

from __future__ import annotations
