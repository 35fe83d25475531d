"""Talking gRPC: the server bootstrap, handler wrapping, interceptors, channels, health,
validation, errors, call context and the codes that decide fallback and retries."""

from __future__ import annotations
