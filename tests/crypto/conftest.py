"""Fixtures shared with the end-to-end tests (real rtcp processes on loopback)."""

from tests.e2e.conftest import proxy, receiver, spawn  # noqa: F401
