"""The standard main of a module: `run_module(spec)` is the whole `__main__` of a module.

It reads the settings, sets up logging, takes the module's identity on the mesh (mutual TLS
with `<kind>-<name>` credentials from the PKI folder, or plaintext when
SOULSPOT_TLS__PLAINTEXT=true) and runs a `ModuleRuntime` until SIGTERM or SIGINT, then shuts
it down gracefully.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from typing import TYPE_CHECKING, Any

from services.kit.module.runtime import ModuleRuntime
from services.kit.observability.logging import setup_logging
from services.kit.security.identity import Identity
from services.kit.security.tls import transport_for, use_transport
from services.kit.support import eventloop

if TYPE_CHECKING:
    from collections.abc import Sequence

    from services.kit.module.spec import ModuleSpec
    from services.kit.support.settings import KitSettings

__all__ = ["run_module", "serve"]

log = logging.getLogger("soulspot.module")


async def serve(spec: ModuleSpec[Any], settings: KitSettings | None = None) -> None:
    """Run the module until SIGTERM or SIGINT, then shut down gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    runtime = ModuleRuntime(spec, settings)
    await runtime.start()
    try:
        await stop.wait()
        log.info("shutdown requested", extra={"module_name": spec.name})
    finally:
        await runtime.stop()


def run_module(spec: ModuleSpec[Any], argv: Sequence[str] | None = None) -> int:
    """The `python -m services.<module>` entry point. Returns the process exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help"):
        print(
            f"usage: python -m services.{spec.name}\n"
            f"Serves the {spec.name} module on 127.0.0.1:{spec.default_port}; settings come from "
            f"SOULSPOT_* environment variables (SOULSPOT_{spec.name.upper()}__PORT, "
            "SOULSPOT_ROUTER_ADDRESS, ...) and the YAML file named by SOULSPOT_CONFIG; it "
            f"speaks mutual TLS as spiffe://soulspot/module/{spec.name} with the certificates "
            "in SOULSPOT_TLS__PKI_DIR (default <state dir>/pki)."
        )
        return 0
    try:
        settings = spec.settings_cls()
        eventloop.selected_loop()
    except Exception as err:
        print(f"{spec.name}: invalid settings: {err}", file=sys.stderr)
        return 2
    setup_logging(spec.name, settings.log_level, json_lines=settings.log_json)
    try:
        # Before any port or channel opens: the server and the router channel use it.
        use_transport(transport_for(Identity.module(spec.name), settings.tls, settings.state_dir))
    except (OSError, ValueError) as err:
        print(f"{spec.name}: {err}", file=sys.stderr)
        return 2
    try:
        eventloop.run(serve(spec, settings))
    except KeyboardInterrupt:
        return 130
    except OSError as err:
        log.error("cannot start", extra={"module_name": spec.name, "error": str(err)})
        return 1
    return 0
