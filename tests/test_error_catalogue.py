"""The error catalogue finds every error the code can raise, and the troubleshooting page shows
all of it: a new error class or message cannot be left out of the documentation."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
import textwrap
import tokenize
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import REPO, run_cli

from m3fm.error_catalogue import (
    CLI_FAILURES,
    Catalogue,
    _cli_failures,
    build_catalogue,
    source_roots,
)
from m3fm.registry.errors import M3fmError


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return build_catalogue()


def _modules() -> dict[str, Path]:
    """Module name -> file of every module of m3fm."""
    return {
        ".".join((package, *path.relative_to(root).with_suffix("").parts)).removesuffix(
            ".__init__"): path
        for package, root in source_roots().items()
        for path in root.rglob("*.py")
    }


def _constructions(path: Path, names: set[str]) -> set[tuple[int, str]]:
    """(line, class) of each ``Name(`` in the code, found by tokens rather than syntax trees
    (class statements excepted) so that this check does not share the catalogue's logic."""
    with path.open("rb") as source:
        words = [(t.start[0], t.string) for t in tokenize.tokenize(source.readline)
                 if t.type in (tokenize.NAME, tokenize.OP)]
    return {
        (line, word)
        for (_, before), (line, word), (_, after) in zip(
            [(0, ""), *words], words, [*words[1:], (0, "")], strict=False)
        if word in names and after == "(" and before != "class"
    }


def _matches(template: str, message: str) -> bool:
    pieces = re.split(r"<[^<>]*>|…", template)
    return re.fullmatch(".+?".join(re.escape(piece) for piece in pieces), message) is not None


def test_every_construction_of_an_error_is_catalogued(catalogue):
    names = {error.name for error in catalogue.errors}
    found = {
        (module, line, name)
        for module, path in _modules().items()
        for line, name in _constructions(path, names)
    }
    catalogued = {(m.module, m.line, m.error) for m in catalogue.messages}
    assert catalogued == found
    assert len(found) > 90


def test_error_classes_are_those_python_knows(catalogue):
    for module in _modules():
        importlib.import_module(module)

    def subclasses(cls: type) -> set[type]:
        return {cls} | {sub for child in cls.__subclasses__() for sub in subclasses(child)}

    known = {cls.__name__ for cls in subclasses(M3fmError) if cls.__module__.startswith("m3fm")}
    assert {error.name for error in catalogue.errors} == known


def test_every_error_class_says_what_it_means_and_how_to_fix_it(catalogue):
    for error in catalogue.errors:
        assert error.cause and error.fix, error.name
        assert 0 < error.exit_code < 256, error.name
    codes = {error.name: error.exit_code for error in catalogue.errors}
    assert codes["M3fmError"] == 1
    assert codes["ConfigError"] == 2  # inherited from UsageError
    assert codes["TrainingInterrupted"] == 130
    assert catalogue.errors[0].name == "M3fmError"


def _extra_package(tmp_path: Path, source: str) -> dict[str, Path]:
    package = tmp_path / "extra"
    package.mkdir()
    (package / "scanner.py").write_text(textwrap.dedent(source))
    return {**source_roots(), "extra": package}


def test_an_error_class_without_a_fix_is_refused(tmp_path):
    roots = _extra_package(tmp_path, '''
        from m3fm.registry.errors import InputError

        class ScannerError(InputError):
            """A scanner that is switched off."""
    ''')
    with pytest.raises(ValueError, match=r"extra\.scanner\.ScannerError .*'Fix:'"):
        build_catalogue(roots)


def test_a_new_error_and_its_messages_are_catalogued(tmp_path):
    roots = _extra_package(tmp_path, '''
        from m3fm.registry import errors
        from somewhere import describe

        class ScannerError(errors.InputError):
            """A scanner that is switched off.

            Fix: switch it on.
            """

        class Scanner:
            def scan(self, port):
                label = f"scanner {port!r}"
                raise ScannerError(f"{label} is off since {self.since}: {len(self.log)} lines")

        def check():
            raise errors.UsageError(describe())
    ''')
    catalogue = build_catalogue(roots)
    error = next(error for error in catalogue.errors if error.name == "ScannerError")
    assert (error.module, error.bases, error.exit_code) == ("extra.scanner", ("InputError",), 1)
    assert (error.cause, error.fix) == ("A scanner that is switched off.", "Switch it on.")
    [message] = catalogue.messages_of("ScannerError")
    assert message.template == "scanner '<port>' is off since <self.since>: <self.log> lines"
    assert (message.module, message.function) == ("extra.scanner", "Scanner.scan")
    [run_time] = [m for m in catalogue.messages_of("UsageError") if m.module == "extra.scanner"]
    assert (run_time.template, run_time.expression, run_time.function) == (
        None, "describe()", "check")


def test_messages_are_templates_of_what_users_see(catalogue, capsys):
    templates = {(m.error, m.template) for m in catalogue.messages}
    assert ("UnknownNameError", "unknown <kind> '<name>'; installed: <names>") in templates
    assert ("InputError", "<path>: no such file or folder") in templates
    assert ("PluginConflictError",
            "<kind> '<name>' is provided by more than one plugin: <providers>; "
            "uninstall one of them") in templates
    # followed into the helper that builds it
    assert ("InputError", "<path>: modality '<spec.name>' does not read <given>; "
            "it reads <reads>") in templates

    code, _, err = run_cli(capsys, "plugins", "show", "no-such-plugin")
    message = err.strip().removeprefix("m3fm: error: ")
    unknown = [m for m in catalogue.messages_of("UnknownNameError")
               if m.module == "m3fm.cli.plugins"]
    assert code == 2 and any(_matches(m.template, message) for m in unknown), message


def test_command_line_failures_show_real_output(catalogue, capsys):
    usage = next(f for f in catalogue.cli_failures if f.catches == "click.UsageError")
    outputs = set()
    for args in (["trian"], ["version", "--bogus"], ["plugins", "show"]):
        code, _, err = run_cli(capsys, *args)
        assert code == usage.exit_code
        outputs.add(err.strip())
    assert outputs == set(usage.examples)
    assert all(_matches(usage.template, line.removeprefix("m3fm: error: ")) for line in outputs)
    assert [f.catches for f in catalogue.cli_failures] == [f.catches for f in CLI_FAILURES]


def test_a_handler_of_main_without_a_description_is_refused():
    source = (REPO / "core" / "cli" / "__init__.py").read_text()
    main = source[source.index("def main("):]
    extended = main.replace("    except M3fmError as exc:",
                            "    except LookupError as exc:\n        _fail(str(exc), 1)\n"
                            "    except M3fmError as exc:")
    assert extended != main
    assert _cli_failures(ast.parse(main))
    with pytest.raises(ValueError, match="LookupError"):
        _cli_failures(ast.parse(extended))


def _hook():
    spec = importlib.util.spec_from_file_location(
        "hooks_troubleshooting", REPO / "docs" / "hooks_troubleshooting.py")
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    return hook


def test_the_troubleshooting_page_shows_the_whole_catalogue(catalogue):
    page = _hook().on_page_markdown(
        (REPO / "docs" / "troubleshooting.md").read_text(),
        page=SimpleNamespace(file=SimpleNamespace(src_uri="troubleshooting.md")),
    )
    for error in catalogue.errors:
        assert f"### {error.name}\n" in page
        assert error.fix in page
    for message in catalogue.messages:
        assert (message.template or message.expression) in page
        assert f"{message.module}.{message.function}" in page
    for failure in catalogue.cli_failures:
        assert f"### {failure.catches} " in page
    example = re.search(r"```text\nm3fm: error: (.*)\n```", page).group(1)
    assert any(_matches(m.template, example) for m in catalogue.messages), example
