"""Test helpers shared by every app's tests (fixtures are registered in the root conftest.py)."""
