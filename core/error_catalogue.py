"""Every error message the `m3fm` command can print, read from the source code.

The troubleshooting page is generated from this catalogue when the documentation is built, so a
new error class or a new ``raise`` appears there without anyone remembering to write it down.
The sources are read with :mod:`ast` instead of being imported: most messages are f-strings
whose values exist only at run time, and their wording, with ``<placeholders>`` for the values,
is what a user searches for.

An error class documents itself: the first paragraph of its docstring says what it means and a
paragraph starting ``Fix:`` says what to do.  A class without both is refused, which makes the
tests and the documentation build fail until it is documented.
"""

from __future__ import annotations

import ast
import copy
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

BASE_ERROR = "M3fmError"
PACKAGES = ("m3fm", "m3fm.plugins", "m3fm.registry")
CLI_MODULE = "m3fm.cli"


@dataclass(frozen=True)
class ErrorClass:
    """A subclass of ``M3fmError`` (or that class itself): what it means and how to fix it."""

    name: str
    module: str
    bases: tuple[str, ...]
    exit_code: int
    cause: str
    fix: str


@dataclass(frozen=True)
class Message:
    """One place that constructs an error, with the message it gives.

    `template` is the message with ``<placeholders>`` for what varies, or None when the text is
    only known at run time; `expression` is the code that gives the message.
    """

    error: str
    template: str | None
    expression: str
    module: str
    function: str
    line: int


@dataclass(frozen=True)
class CliFailure:
    """A failure that `m3fm.cli.main` reports itself: it has no error class of m3fm's own."""

    catches: str  # the `except` clause of main(), e.g. "click.UsageError"
    exit_code: int
    cause: str
    fix: str
    examples: tuple[str, ...] = ()  # real output, checked by the tests
    template: str = ""  # main()'s message, filled in from its source


@dataclass(frozen=True)
class Catalogue:
    """What the troubleshooting page shows."""

    errors: tuple[ErrorClass, ...]  # M3fmError first, then each class before its subclasses
    messages: tuple[Message, ...]  # in source order, module by module
    cli_failures: tuple[CliFailure, ...]  # in the order main() catches them

    def messages_of(self, error: str) -> list[Message]:
        return [message for message in self.messages if message.error == error]


# main()'s handlers for what is not an M3fmError; kept here because click's messages and
# Python's exceptions have no docstring of ours to carry a cause and a fix.
CLI_FAILURES = (
    CliFailure(
        catches="click.UsageError",
        exit_code=2,
        cause="The command line itself is wrong: an unknown command or option, a missing "
        "argument or option, or a value that is not one of the allowed choices.",
        fix="Run the command with `--help` (the message names it) to see what it takes; "
        "`m3fm --help` lists the commands.",
        examples=(
            "m3fm: error: No such command 'trian'. Did you mean 'train'? (see 'm3fm --help')",
            "m3fm: error: No such option '--bogus'. (see 'm3fm version --help')",
            "m3fm: error: Missing argument 'NAME'. (see 'm3fm plugins show --help')",
        ),
    ),
    CliFailure(
        catches="click.ClickException",
        exit_code=1,
        cause="click could not handle an argument, for example a file it had to open.",
        fix="Check the argument the message names.",
    ),
    CliFailure(
        catches="click.Abort, KeyboardInterrupt",
        exit_code=130,
        cause="The command was stopped with Ctrl-C (or its input ended) before it finished. "
        "Training stops more gently: see TrainingInterrupted.",
        fix="Run the command again.",
    ),
    CliFailure(
        catches="MemoryError",
        exit_code=1,
        cause="The machine (or the GPU: torch's OutOfMemoryError is reported the same way) ran "
        "out of memory, usually from too many or too large inputs decoded at once.",
        fix="Give fewer inputs at a time, lower the decoding batch size or the beam width, or "
        "use a machine with more memory; inputs larger than M3FM_MAX_INPUT_MB are refused "
        "before they are decoded.",
    ),
    CliFailure(
        catches="OSError",
        exit_code=1,
        cause="The operating system refused a file operation that no m3fm check foresaw: the "
        "disk filled up, a file is not readable or writable, a folder is missing.",
        fix="The message names the file and the system's reason: free disk space, fix the "
        "permissions or create the folder, then run the command again (training resumes with "
        "--resume).",
    ),
    CliFailure(
        catches="Exception",
        exit_code=1,
        cause="Something m3fm did not foresee: a bug in m3fm or a plugin, or an environment "
        "problem no check catches (out of memory, a broken installation).",
        fix="Run the command again with `M3FM_DEBUG=1` to see the traceback; if it points "
        "into m3fm or a plugin, report it with the traceback and the output of "
        "`m3fm version`.",
    ),
)


def source_roots() -> dict[str, Path]:
    """The folder of each of m3fm's packages, found without importing them."""
    roots = {}
    for package in PACKAGES:
        spec = importlib.util.find_spec(package)
        roots[package] = Path(next(iter(spec.submodule_search_locations)))
    return roots


def build_catalogue(roots: dict[str, Path] | None = None) -> Catalogue:
    """Read the sources under `roots` (package name -> folder; m3fm's own by default)."""
    modules = _parse(source_roots() if roots is None else roots)
    classes = _error_classes(modules)
    errors = tuple(_describe(name, classes) for name in _hierarchy_order(classes))
    templates = {module: _Templates(tree) for module, tree in modules.items()}
    messages = []
    for module, tree in modules.items():
        sites = _Sites(module, classes, templates)
        sites.visit(tree)
        messages.extend(sites.found)
    return Catalogue(errors, tuple(messages), _cli_failures(modules[CLI_MODULE]))


def _parse(roots: dict[str, Path]) -> dict[str, ast.Module]:
    """Module name -> syntax tree; a file reachable from two roots is read once."""
    modules, seen = {}, set()
    for package, root in roots.items():
        for path in sorted(root.rglob("*.py")):
            if path.resolve() in seen:
                continue
            seen.add(path.resolve())
            parts = path.relative_to(root).with_suffix("").parts
            module = ".".join((package, *parts)).removesuffix(".__init__")
            modules[module] = ast.parse(path.read_text(encoding="utf-8"), str(path))
    return modules


@dataclass(frozen=True)
class _ClassSource:
    """A class statement and the module it is in."""

    module: str
    node: ast.ClassDef

    @property
    def bases(self) -> tuple[str, ...]:
        return tuple(name for base in self.node.bases if (name := _name_of(base)))

    def body_value(self, name: str) -> ast.expr | None:
        """What the class body assigns to `name`, if it does."""
        for statement in self.node.body:
            match statement:
                case ast.Assign(targets=[target], value=value) | ast.AnnAssign(
                    target=target, value=value
                ) if _name_of(target) == name:
                    return value
        return None

    def init(self) -> ast.FunctionDef | None:
        for statement in self.node.body:
            if isinstance(statement, ast.FunctionDef) and statement.name == "__init__":
                return statement
        return None


def _error_classes(modules: dict[str, ast.Module]) -> dict[str, _ClassSource]:
    """Every class deriving from M3fmError (and that class), by name."""
    candidates = [
        _ClassSource(module, node)
        for module, tree in modules.items()
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef)
    ]
    found = {c.node.name: c for c in candidates if c.node.name == BASE_ERROR}
    if not found:
        raise ValueError(f"no class {BASE_ERROR} in the sources")
    grown = True
    while grown:  # until no class derives from one found so far
        grown = False
        for candidate in candidates:
            name = candidate.node.name
            if found.get(name) is candidate or not set(candidate.bases) & set(found):
                continue
            if name in found:
                raise ValueError(
                    f"two error classes named {name} ({found[name].module} and "
                    f"{candidate.module}): a raise would not say which one it means"
                )
            found[name] = candidate
            grown = True
    return found


def _hierarchy_order(classes: dict[str, _ClassSource]) -> list[str]:
    """M3fmError, then depth first with siblings by name: each class before its subclasses."""
    order = []

    def visit(name: str) -> None:
        order.append(name)
        for child in sorted(n for n, c in classes.items() if name in c.bases):
            if child not in order:
                visit(child)

    visit(BASE_ERROR)
    return order


def _describe(name: str, classes: dict[str, _ClassSource]) -> ErrorClass:
    source = classes[name]
    where = f"{source.module}.{name}"
    paragraphs = [
        " ".join(paragraph.split())
        for paragraph in (ast.get_docstring(source.node) or "").split("\n\n")
    ]
    fixes = [p.removeprefix("Fix:").strip() for p in paragraphs if p.startswith("Fix:")]
    if not paragraphs[0] or paragraphs[0].startswith("Fix:") or not fixes:
        raise ValueError(
            f"{where} needs a docstring saying what the error means (first paragraph) and "
            "how to fix it (a paragraph starting 'Fix:'); the troubleshooting page shows both"
        )
    exit_code = _inherited(name, classes, lambda c: c.body_value("exit_code"))
    if not (isinstance(exit_code, ast.Constant) and isinstance(exit_code.value, int)):
        raise ValueError(f"{where}.exit_code must be a whole number written in the class body")
    bases = tuple(base for base in source.bases if base in classes)
    fix = fixes[0][:1].upper() + fixes[0][1:]  # a sentence, though it follows 'Fix:'
    return ErrorClass(name, source.module, bases, exit_code.value, paragraphs[0], fix)


def _inherited(
    name: str, classes: dict[str, _ClassSource], lookup: Callable[[_ClassSource], Any]
) -> Any:
    """`lookup` of the class or, failing that, of its nearest error base that has one."""
    pending = [name]
    while pending:
        source = classes[pending.pop(0)]
        if (found := lookup(source)) is not None:
            return found
        pending.extend(base for base in source.bases if base in classes)
    return None


def _init_message(source: _ClassSource) -> tuple[str, ast.FunctionDef, ast.expr] | None:
    """A custom ``__init__`` (with its module) and the message it gives ``super().__init__``."""
    init = source.init()
    for node in ast.walk(init) if init else ():
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "__init__"
            and node.args
        ):
            return source.module, init, node.args[0]
    return None


class _Sites(ast.NodeVisitor):
    """The error constructions of one module, each with its message and enclosing function."""

    def __init__(self, module: str, classes: dict[str, _ClassSource],
                 templates: dict[str, _Templates]) -> None:
        self.module, self.classes, self.templates = module, classes, templates
        self.enclosing: list[ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef] = []
        self.found: list[Message] = []

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.ClassDef) -> None:
        self.enclosing.append(node)
        self.generic_visit(node)
        self.enclosing.pop()

    visit_AsyncFunctionDef = visit_ClassDef = visit_FunctionDef

    def visit_Call(self, node: ast.Call) -> None:
        error = _name_of(node.func)
        if error in self.classes:
            template, expression = self._message(error, node)
            function = ".".join(n.name for n in self.enclosing) or "<module>"
            self.found.append(
                Message(error, template, expression, self.module, function, node.lineno)
            )
        self.generic_visit(node)

    def _message(self, error: str, call: ast.Call) -> tuple[str | None, str]:
        """The call's message and the code it comes from."""
        scope = next((n for n in reversed(self.enclosing) if not isinstance(n, ast.ClassDef)),
                     None)
        here = self.templates[self.module]
        custom = _inherited(error, self.classes, _init_message)
        if custom is None:
            argument = call.args[0] if call.args else ast.Constant("")
            return here.render(argument, scope), ast.unparse(argument)
        module, init, message = custom
        values = {name: here.argument(value, scope, name) for name, value in _bind(init, call)}
        filled = _Substitute(values).visit(copy.deepcopy(message))
        return self.templates[module].render(filled, init), ast.unparse(call)


def _bind(init: ast.FunctionDef, call: ast.Call) -> list[tuple[str, ast.expr]]:
    """The expression each parameter of `init` gets from `call`, defaults included."""
    parameters = [argument.arg for argument in init.args.args[1:]]  # without self
    bound = dict(zip(parameters[len(parameters) - len(init.args.defaults):],
                     init.args.defaults, strict=True))
    bound.update(zip(parameters, call.args, strict=False))
    bound.update((keyword.arg, keyword.value) for keyword in call.keywords if keyword.arg)
    return list(bound.items())


class _Substitute(ast.NodeTransformer):
    """Puts the text of each argument in place of its parameter's name."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values = values

    def visit_Name(self, node: ast.Name) -> ast.expr:
        return ast.Constant(self.values[node.id]) if node.id in self.values else node


class _Templates:
    """Renders the message expressions of one module as text with ``<placeholders>``."""

    def __init__(self, tree: ast.Module) -> None:
        self.helpers = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
        self.constants = {  # WEIGHTS_NAME = "model.safetensors"
            name: node.value.value
            for node in tree.body
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
            for name in [_dotted(node.targets[0])] if name and name.isupper()
        }

    def render(self, expr: ast.expr, scope: ast.FunctionDef | None) -> str | None:
        """The text `expr` evaluates to, what varies shown as a placeholder; None if unknown.

        A local variable assigned once and a helper of the module with one ``return`` are
        followed, since messages are often put together that way.
        """
        match expr:
            case ast.Constant(value=str() as text):
                return text
            case ast.JoinedStr(values=parts):
                return "".join(self._part(part, scope) for part in parts)
            case ast.BinOp(left=left, op=ast.Add(), right=right):
                texts = [self.render(left, scope), self.render(right, scope)]
                return None if None in texts else "".join(texts)
            case ast.Name(id=name) if (value := _assigned_once(scope, name)) is not None:
                return self.render(value, scope)
            case ast.Name(id=name) if name in self.constants:
                return self.constants[name]
            case ast.Call(func=ast.Name(id=name)) if name in self.helpers:
                helper = self.helpers[name]
                returned = _single_return(helper)
                return None if returned is None else self.render(returned, helper)
        return None

    def argument(self, expr: ast.expr, scope: ast.FunctionDef | None, parameter: str) -> str:
        """An argument of an error's ``__init__`` as text: its value, template or name."""
        if isinstance(expr, ast.Constant):
            return expr.value
        text = self.render(expr, scope)
        return f"<{_dotted(expr) or parameter}>" if text is None else text

    def _part(self, part: ast.expr, scope: ast.FunctionDef | None) -> str:
        if isinstance(part, ast.Constant):
            return part.value
        value = part.value
        text = value.value if isinstance(value, ast.Constant) else self.text(value, scope)
        return repr(text) if part.conversion == ord("r") else str(text)

    def text(self, expr: ast.expr, scope: ast.FunctionDef | None) -> str:
        """What `expr` shows: its template if known, else a placeholder named after it."""
        text = self.render(expr, scope)
        if text is not None:
            return text
        if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Div):  # path / CONFIG_FILE
            return f"{self.text(expr.left, scope)}/{self.text(expr.right, scope)}"
        if isinstance(expr, ast.Call) and len(expr.args) == 1:  # len(rows), ", ".join(names)
            return self.text(expr.args[0], scope)
        if isinstance(expr, ast.Constant):  # an argument put in by _Substitute
            return str(expr.value)
        return f"<{dotted}>" if (dotted := _dotted(expr)) else "…"


def _cli_failures(tree: ast.Module) -> tuple[CliFailure, ...]:
    """CLI_FAILURES with main()'s message for each; they must match main()'s handlers."""
    main = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main")
    handlers = {
        _caught(handler): handler
        for node in ast.walk(main) if isinstance(node, ast.Try)
        for handler in node.handlers
    }
    handlers.pop(BASE_ERROR, None)  # reported through the error classes
    documented = [failure.catches for failure in CLI_FAILURES]
    if sorted(handlers) != sorted(documented):
        raise ValueError(
            f"{CLI_MODULE}.main() catches {sorted(handlers)} but CLI_FAILURES describes "
            f"{sorted(documented)}; describe each handler there"
        )
    templates = _Templates(tree)
    return tuple(
        replace(failure, template=templates.text(_reported(handlers[failure.catches]), main))
        for failure in CLI_FAILURES
    )


def _caught(handler: ast.ExceptHandler) -> str:
    types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return ", ".join(ast.unparse(t) for t in types)


def _reported(handler: ast.ExceptHandler) -> ast.expr:
    """The message a handler of main() passes to ``_fail``."""
    for node in ast.walk(handler):
        if isinstance(node, ast.Call) and _name_of(node.func) == "_fail":
            return node.args[0]
    raise ValueError(f"{CLI_MODULE}.main(): the handler of {_caught(handler)} calls no _fail")


def _name_of(expr: ast.expr) -> str | None:
    """The name an expression ends in: ``InputError`` for both ``InputError`` and
    ``errors.InputError``."""
    if isinstance(expr, ast.Name):
        return expr.id
    return expr.attr if isinstance(expr, ast.Attribute) else None


def _dotted(expr: ast.expr) -> str | None:
    """``spec.name`` for a name or chain of attributes, else None."""
    if isinstance(expr, ast.Name):
        return expr.id
    if isinstance(expr, ast.Attribute) and (owner := _dotted(expr.value)):
        return f"{owner}.{expr.attr}"
    return None


def _assigned_once(scope: ast.FunctionDef | None, name: str) -> ast.expr | None:
    """The value of a local variable of `scope` that one plain assignment sets, else None."""
    if scope is None or name in {argument.arg for argument in ast.walk(scope.args)
                                 if isinstance(argument, ast.arg)}:
        return None
    nodes = list(ast.walk(scope))
    stores = [n for n in nodes
              if isinstance(n, ast.Name) and n.id == name and isinstance(n.ctx, ast.Store)]
    values = [n.value for n in nodes
              if isinstance(n, ast.Assign) and [_dotted(t) for t in n.targets] == [name]]
    return values[0] if len(stores) == len(values) == 1 else None


def _single_return(function: ast.FunctionDef) -> ast.expr | None:
    returns = [node for node in ast.walk(function) if isinstance(node, ast.Return)]
    return returns[0].value if len(returns) == 1 else None
