"""What tests share: in-process servers, real processes, stand-ins and checks, one module each.

A helper used by a single test file stays beside that file; everything shared lives here and
is imported as `tests.helpers.<name>`. Launchers run as `python -m tests.helpers.<name>` with
the repository root as the working directory.
"""

from __future__ import annotations
