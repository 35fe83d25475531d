"""Who is calling: the mesh CA, identities named by SPIFFE-style URIs, TLS credentials."""

from __future__ import annotations
