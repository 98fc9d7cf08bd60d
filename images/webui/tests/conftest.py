"""Registers the `container` marker when these tests run from the repository root
(images/kokoro's pyproject registers it only for its own suite)."""


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "container: builds an image and runs it with Docker (select with -m container)")
