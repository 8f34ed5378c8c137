"""pytest plugin: fixtures for relying-party test suites (filled in by the CLI/plugin work)."""
