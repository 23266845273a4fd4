"""Errors a user can act on.

Every error the CLI reports on one line derives from :class:`M3fmError`. They live in the
registry, the bottom layer, so plugins (first- or third-party) can raise them without
depending on the engine.

Each class says what it means (the first paragraph of its docstring) and how to fix it (the
paragraph starting ``Fix:``): the documentation's troubleshooting page is generated from them
(see ``m3fm.error_catalogue``), so a class without both fails the tests.
"""


class M3fmError(Exception):
    """An error caused by input, configuration or environment, not by a bug in m3fm.

    The CLI prints ``m3fm: error: <message>`` and exits with :attr:`exit_code`.

    Fix: do what the message says; it names the file, option or setting at fault.
    """

    exit_code = 1


class UsageError(M3fmError):
    """A command was called with arguments that cannot work (exit code 2, like a usage error).

    Fix: change the argument or option the message names; ``m3fm COMMAND --help`` shows what
    a command takes.
    """

    exit_code = 2


class UnknownNameError(UsageError):
    """A plugin, language, dataset format or label name that nothing installed provides.

    Fix: use one of the names the message lists (``m3fm plugins list`` shows the installed
    plugins, ``m3fm recipes`` the recipes), or install the plugin that provides the name
    (``m3fm plugins available`` lists the known ones).
    """

    def __init__(self, kind: str, name: str, available: list[str],
                 listed_as: str = "installed") -> None:
        self.kind, self.name, self.available = kind, name, sorted(available)
        names = ", ".join(self.available) or "none"
        super().__init__(f"unknown {kind} {name!r}; {listed_as}: {names}")


class PluginConflictError(M3fmError):
    """Two plugins claim the same name, so resolving that name would be a guess.

    Fix: uninstall one of the plugins the message names; ``m3fm plugins list`` shows which
    plugin provides what.
    """

    def __init__(self, kind: str, name: str, providers: list[str],
                 claim: str = "is provided by more than one plugin") -> None:
        self.kind, self.name, self.providers = kind, name, providers
        super().__init__(
            f"{kind} {name!r} {claim}: {' and '.join(providers)}; uninstall one of them"
        )


class InputError(M3fmError):
    """An input file or folder that cannot be used: missing, unreadable, wrong type, empty.

    Fix: check the path the message names.  An image must be a file type its modality reads
    (``m3fm plugins show MODALITY``; ``m3fm preprocess`` tries many inputs at once); a model
    must be a folder a training run wrote, such as its ``final/``.
    """


class DataFormatError(M3fmError):
    """A data set as a whole cannot be read (missing annotation file, wrong layout).

    Fix: compare the folder with its format's layout on the "Data sets and formats" page, or
    name the format (``--format``) when it cannot be told; ``m3fm data summary PATH`` shows
    what can be read.
    """


class NotAvailableError(M3fmError):
    """Something this installation or its plugins do not provide, such as a bundled model or
    a language's finding extractor; m3fm refuses rather than pretends.

    Fix: take the way round the message offers (such as ``--checkpoint DIR``), or install a
    release or plugin that provides what is missing.
    """


class MissingDataError(UsageError):
    """The data lack what a step needs: a split with no images of a modality labelled with
    the label, no images with reports in a language, training images of one class only.

    Fix: point the command at data that has what the message names (``m3fm data summary
    PATH`` shows a data set's splits, modalities, labels and report languages), or choose
    another split, label or language.  ``m3fm benchmark`` records such a step as skipped and
    goes on.
    """


class ConfigError(UsageError):
    """A recipe or configuration file, or a --set override, that does not validate.

    Fix: correct the field the message names, in the recipe file or the ``--set`` override;
    the recipes ``m3fm recipes`` lists are working examples.
    """
