"""Root pytest configuration: the real-infrastructure fixtures for every test in the repo."""

pytest_plugins = ["kefu_local.pytest_plugin"]
