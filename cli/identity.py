"""Who the CLI is on the mesh: its client name in requests and events, and this process's
instance name for its subscriptions."""

from __future__ import annotations

import os
import socket

from services.kit.security.identity import CLI

# The name the router stamps on this client's events: its certificate's identity name.
CLIENT = CLI.name


def instance_name() -> str:
    """This process, as a subscriber instance: host and pid."""
    return f"{socket.gethostname()}-{os.getpid()}"
