"""The environment variables a user sets for the spotify module's credentials, spelled from
its settings model, and a check that a message names each of them in full."""

from __future__ import annotations

import re

from services.spotify.settings import SpotifySection, SpotifySettings


def credential_variables() -> tuple[str, str]:
    """The variables of the client id and secret, as the settings model reads them."""
    config = SpotifySettings.model_config
    prefix = str(config.get("env_prefix", ""))
    delimiter = str(config.get("env_nested_delimiter", ""))
    (section,) = (
        name
        for name, field in SpotifySettings.model_fields.items()
        if field.annotation is SpotifySection
    )
    names = tuple(
        f"{prefix}{section}{delimiter}{field}".upper() for field in ("client_id", "client_secret")
    )
    return names[0], names[1]


def names_in_full(message: str, variables: tuple[str, ...]) -> list[str]:
    """The variables the message names as whole words (not as a shorthand like "__SECRET")."""
    return [v for v in variables if re.search(rf"(?<![A-Z0-9_]){v}(?![A-Z0-9_])", message)]
