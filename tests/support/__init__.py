"""Test doubles shared by the test suite (external services only; project components are never mocked)."""
