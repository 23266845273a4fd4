"""Errors a user can act on.

Every error the CLI reports on one line derives from :class:`M3fmError`. They live in the
registry, the bottom layer, so plugins (first- or third-party) can raise them without
depending on the engine.
"""


class M3fmError(Exception):
    """An error caused by input, configuration or environment, not by a bug in m3fm.

    The CLI prints ``m3fm: error: <message>`` and exits with :attr:`exit_code`.
    """

    exit_code = 1


class UsageError(M3fmError):
    """A command was called with arguments that cannot work (exit code 2, like a usage error)."""

    exit_code = 2


class UnknownNameError(UsageError):
    """A plugin, language, dataset format or label name that nothing installed provides."""

    def __init__(self, kind: str, name: str, available: list[str],
                 listed_as: str = "installed") -> None:
        self.kind, self.name, self.available = kind, name, sorted(available)
        names = ", ".join(self.available) or "none"
        super().__init__(f"unknown {kind} {name!r}; {listed_as}: {names}")


class PluginConflictError(M3fmError):
    """Two plugins claim the same name, so resolving that name would be a guess."""

    def __init__(self, kind: str, name: str, providers: list[str]) -> None:
        self.kind, self.name, self.providers = kind, name, providers
        super().__init__(
            f"{kind} {name!r} is provided by more than one plugin: {' and '.join(providers)};"
            " uninstall one of them"
        )


class InputError(M3fmError):
    """An input file or folder that cannot be used: missing, unreadable, wrong type, empty."""


class DataFormatError(M3fmError):
    """A data set as a whole cannot be read (missing annotation file, wrong layout)."""


class NotAvailableError(M3fmError):
    """A command whose engine is not part of this release; it refuses rather than pretends."""


class ConfigError(UsageError):
    """A recipe or configuration file, or a --set override, that does not validate."""
