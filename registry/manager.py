"""Finding, loading and resolving plugins.

Plugins are discovered through the ``m3fm`` entry-point group — the built-in ones too, so they
travel the same path as any third-party package.  Every plugin is loaded in isolation: one
that fails to import, requires another plugin-API version, or raises from a hook is recorded
with its error and skipped, so a broken package never takes the CLI down.  Plugin code runs
only through :mod:`m3fm.registry.guard`, so not even ``sys.exit()`` in it ends the process.
"""

from __future__ import annotations

import difflib
import functools
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Literal

import pluggy
from packaging.specifiers import InvalidSpecifier, SpecifierSet

from . import hookspecs
from .contract import PLUGIN_API_VERSION
from .errors import PluginConflictError, UnknownNameError
from .guard import PluginError, call_plugin, guard_spec, install_interrupt_marker
from .specs import ANCHOR_LANGUAGE, DatasetSpec, LabelSpec, LanguageSpec, ModalitySpec

ENTRY_POINT_GROUP = hookspecs.PROJECT

Kind = Literal["modality", "language", "dataset"]


@dataclass(frozen=True)
class _KindInfo:
    hook: str
    spec_type: type
    key: str  # attribute that holds the spec's name


KINDS: dict[str, _KindInfo] = {
    "modality": _KindInfo("m3fm_modalities", ModalitySpec, "name"),
    "language": _KindInfo("m3fm_languages", LanguageSpec, "code"),
    "dataset": _KindInfo("m3fm_datasets", DatasetSpec, "name"),
}

LABEL_KIND = _KindInfo("m3fm_labels", LabelSpec, "id")
"""Labels are collected like the kinds above, but one id may come from several plugins:
their entries are merged (see :meth:`PluginRegistry.label`), not refused as a conflict."""


@dataclass
class PluginInfo:
    """One plugin as discovered: where it came from, whether it loaded, what it provides."""

    name: str
    module: str
    package: str | None = None
    version: str | None = None
    status: Literal["ok", "failed", "incompatible"] = "ok"
    error: str | None = None
    provides: dict[str, list[str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    """What loaded but looks wrong, e.g. a function named like a misspelt hook."""

    @property
    def source(self) -> str:
        """``package version``, or the module path for plugins registered without a package."""
        if self.package:
            return f"{self.package} {self.version or ''}".strip()
        return self.module

    @property
    def owner(self) -> str:
        """``plugin 'name' (source)``: how messages name the plugin whose code failed."""
        return f"plugin {self.name!r} ({self.source})"


HOOK_NAMES = tuple(sorted(name for name in dir(hookspecs) if name.startswith("m3fm_")))
"""The hooks a plugin may implement."""


def misspelt_hooks(plugin: object) -> list[str]:
    """A line for each function of `plugin` named almost like a hook (``m3fm_language``):
    pluggy calls hooks by exact name, so such a function is silently never called."""
    lines = []
    for name in sorted(dir(plugin)):
        if name in HOOK_NAMES or name.startswith("_") or not callable(getattr(plugin, name)):
            continue
        close = difflib.get_close_matches(name, HOOK_NAMES, n=1, cutoff=0.85)
        if close:
            lines.append(f"function {name!r} is never called: did you mean the hook "
                         f"{close[0]!r}?")
    return lines


@dataclass(frozen=True)
class Provided:
    """A spec together with the plugin that provides it."""

    kind: str
    name: str
    spec: Any
    plugin: PluginInfo


class PluginRegistry:
    """The plugins of one process and the specs they provide, looked up by name."""

    def __init__(self) -> None:
        install_interrupt_marker()  # before any plugin code runs: a real Ctrl-C stays one
        self._pm = pluggy.PluginManager(hookspecs.PROJECT)
        self._pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        self._provided: dict[str, dict[str, list[Provided]]] = {kind: {} for kind in KINDS}
        self._labels: dict[str, list[Provided]] = {}

    @classmethod
    def discover(cls, group: str = ENTRY_POINT_GROUP) -> PluginRegistry:
        """A registry holding every plugin advertised in the entry-point group."""
        registry = cls()
        for entry_point in sorted(entry_points(group=group), key=lambda ep: ep.name):
            registry.add_entry_point(entry_point)
        return registry

    def add_entry_point(self, entry_point: EntryPoint) -> PluginInfo:
        """Import an entry point's object and add it as a plugin; failures are recorded."""
        dist = entry_point.dist
        info = PluginInfo(
            name=entry_point.name,
            module=entry_point.value,
            package=dist.name if dist else None,
            version=dist.version if dist else None,
        )
        try:
            plugin = call_plugin(info.owner, "its import", entry_point.load)
        except PluginError as exc:
            return self._fail(info, str(exc))
        except Exception as exc:  # any import-time failure of third-party code
            return self._fail(info, f"import failed: {type(exc).__name__}: {exc}")
        return self._add(plugin, info)

    def add_plugin(self, plugin: object, name: str, package: str | None = None,
                   version: str | None = None) -> PluginInfo:
        """Add an already imported plugin object (for embedding m3fm in another program)."""
        module = getattr(plugin, "__name__", type(plugin).__name__)
        info = PluginInfo(name=name, module=module, package=package, version=version)
        return self._add(plugin, info)

    def _fail(self, info: PluginInfo, error: str, status: str = "failed") -> PluginInfo:
        info.status, info.error = status, error  # type: ignore[assignment]
        self.plugins[info.name] = info
        return info

    def _add(self, plugin: object, info: PluginInfo) -> PluginInfo:
        if info.name in self.plugins:
            return self._fail(info, f"another plugin is already registered as {info.name!r}")
        required = getattr(plugin, "M3FM_API", None)
        if required is not None:
            try:
                compatible = SpecifierSet(str(required)).contains(PLUGIN_API_VERSION)
            except InvalidSpecifier:
                return self._fail(info, f"M3FM_API = {required!r} is not a version specifier")
            if not compatible:
                return self._fail(
                    info,
                    f"requires m3fm plugin API {required}, this m3fm provides {PLUGIN_API_VERSION}",
                    status="incompatible",
                )
        try:
            self._pm.register(plugin, name=info.name)
        except Exception as exc:  # pluggy validation of hook signatures
            return self._fail(info, f"invalid hook implementation: {exc}")
        info.warnings += misspelt_hooks(plugin)
        try:
            collected = {kind: self._collect(kind, meta, info) for kind, meta in KINDS.items()}
            labels = self._collect("label", LABEL_KIND, info)
        except Exception as exc:  # a hook raised, returned the wrong thing or tried to exit
            self._pm.unregister(name=info.name)
            return self._fail(info, str(exc))
        for kind, specs in collected.items():
            if specs:
                info.provides[kind] = [name for name, _ in specs]
            for name, spec in specs:
                self._provided[kind].setdefault(name, []).append(Provided(kind, name, spec, info))
        if labels:
            info.provides["label"] = [name for name, _ in labels]
        for name, spec in labels:
            self._labels.setdefault(name, []).append(Provided("label", name, spec, info))
        self.plugins[info.name] = info
        return info

    def _collect(self, kind: str, meta: _KindInfo, info: PluginInfo) -> list[tuple[str, Any]]:
        """The specs the plugin's hook for `kind` returns, each guarded (see :func:`guard_spec`)."""
        impls = [
            impl for impl in getattr(self._pm.hook, meta.hook).get_hookimpls()
            if impl.plugin_name == info.name
        ]
        collected = []
        for impl in impls:
            try:
                result = call_plugin(info.owner, f"{meta.hook}()", impl.function)
            except PluginError:
                raise
            except Exception as exc:
                raise RuntimeError(f"{meta.hook}() raised {type(exc).__name__}: {exc}") from exc
            if not isinstance(result, list | tuple) or not all(
                isinstance(spec, meta.spec_type) for spec in result
            ):
                raise TypeError(
                    f"{meta.hook}() must return a list of {meta.spec_type.__name__}, "
                    f"got {result!r:.80}"
                )
            for spec in result:
                name = getattr(spec, meta.key)
                collected.append((name, guard_spec(spec, info.owner, f"{kind} {name!r}")))
        return collected

    def providers(self, kind: str, name: str) -> list[Provided]:
        """Every plugin that provides `name` of this kind (more than one means a conflict)."""
        return list(self._provided[kind].get(name, []))

    def names(self, kind: str) -> list[str]:
        """Names of this kind that plugins provide, sorted."""
        return sorted(self._provided[kind])

    def get(self, kind: str, name: str) -> Any:
        """The spec of this kind and name; raises a clear error if unknown or ambiguous."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {sorted(KINDS)}, not {kind!r}")
        providers = self._provided[kind].get(name)
        if not providers:
            raise UnknownNameError(kind, name, self.names(kind))
        if len(providers) > 1:
            raise PluginConflictError(
                kind, name, [f"{p.plugin.name} ({p.plugin.source})" for p in providers]
            )
        return providers[0].spec

    def modality(self, name: str) -> ModalitySpec:
        """The modality spec registered as `name`."""
        return self.get("modality", name)

    def language(self, code: str) -> LanguageSpec:
        """The language spec registered as `code`."""
        return self.get("language", code)

    def dataset(self, name: str) -> DatasetSpec:
        """The dataset-format spec registered as `name`."""
        return self.get("dataset", name)

    def label_ids(self) -> list[str]:
        """Ids of the labels plugins declare with ``m3fm_labels()``, sorted."""
        return sorted(self._labels)

    def label_entries(self, label: str) -> list[Provided]:
        """Every plugin's entry for `label`, in registration order (merged by :meth:`label`)."""
        return list(self._labels.get(label, []))

    def label(self, label: str) -> LabelSpec:
        """The label as all plugins declare it together: the union of their modalities (empty,
        i.e. any, when one entry says any), the first description, and their prompts merged per
        language.  Two plugins giving one language different prompts is a
        :class:`PluginConflictError` naming both."""
        entries = self._labels.get(label)
        if not entries:
            raise UnknownNameError("label", label, self.label_ids(), listed_as="declared")
        prompts: dict[str, tuple[Any, Provided]] = {}
        for entry in entries:
            for lang, given in entry.spec.prompts.items():
                if lang not in prompts:
                    prompts[lang] = (given, entry)
                elif prompts[lang][0] != given:
                    first = prompts[lang][1].plugin
                    raise PluginConflictError(
                        "label", label,
                        [f"{p.name} ({p.source})" for p in (first, entry.plugin)],
                        claim=f"has different {lang!r} prompts from more than one plugin")
        return LabelSpec(
            id=label,
            modalities=self._label_modalities(entries),
            description=next((e.spec.description for e in entries if e.spec.description), ""),
            prompts={lang: given for lang, (given, _) in prompts.items()},
        )

    @staticmethod
    def _label_modalities(entries: list[Provided]) -> tuple[str, ...]:
        if any(not entry.spec.modalities for entry in entries):
            return ()
        return tuple(dict.fromkeys(m for entry in entries for m in entry.spec.modalities))

    def modality_labels(self, modality: str) -> tuple[str, ...]:
        """A modality's labels: those its spec declares (in its order), then every label whose
        ``m3fm_labels()`` entries name the modality or apply to any (sorted)."""
        declared = self.modality(modality).labels
        extra = sorted(
            label for label, entries in self._labels.items()
            if label not in declared and (
                not (modalities := self._label_modalities(entries)) or modality in modalities)
        )
        return (*declared, *extra)

    def label_prompts(self, label: str, lang: str) -> tuple[list[str], list[str], str]:
        """Positive and negative prompts for `label` in `lang`, and the language they are in.

        In order: the label's ``m3fm_labels()`` prompts in `lang`; the language plugin's own
        (`LanguageSpec.label_prompts`, else its templates filled with `finding_names`); the
        anchor language's prompts (the label's, else the anchor language plugin's), which the
        pivot makes sound for any language aligned through it.
        """
        merged = self.label(label) if label in self._labels else None
        if merged is not None and lang in merged.prompts:
            given = merged.prompts[lang]
            return list(given.positive), list(given.negative), lang
        language = self.language(lang)
        if label in language.label_prompts or label in language.finding_names:
            return (*language.prompts(label), lang)
        if merged is not None:  # every LabelSpec has anchor-language prompts
            given = merged.prompts[ANCHOR_LANGUAGE]
            return list(given.positive), list(given.negative), ANCHOR_LANGUAGE
        if lang != ANCHOR_LANGUAGE and self._provided["language"].get(ANCHOR_LANGUAGE):
            anchor = self.language(ANCHOR_LANGUAGE)
            if label in anchor.label_prompts or label in anchor.finding_names:
                return (*anchor.prompts(label), ANCHOR_LANGUAGE)
        known = {*language.finding_names, *language.label_prompts, *self._labels}
        raise UnknownNameError(f"label for language {lang!r}:", label, sorted(known),
                               listed_as="it names")

    def all_provided(self) -> list[Provided]:
        """Every (kind, name, spec, plugin) entry, sorted by kind then name."""
        return [
            provided
            for kind in KINDS
            for name in self.names(kind)
            for provided in self._provided[kind][name]
        ]


@functools.cache
def get_registry() -> PluginRegistry:
    """The process-wide registry, discovered on first use."""
    return PluginRegistry.discover()


def reset_registry() -> None:
    """Forget the process-wide registry so the next call rediscovers (after installing a plugin)."""
    get_registry.cache_clear()
