"""First-party plugins. Each module uses only the public API, as a third-party package would."""
