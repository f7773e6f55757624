"""Typed component registries.

One `Registry` per family of `coopcore.families.FAMILIES`.  A plugin adds entries through its
hook, e.g. ``coop_register_samplers(registry)``, and receives a view of the registry that
records it as the owner of what it adds, so a duplicate name is rejected naming both owners
(also across registries that share a namespace: the model families).

Every entry pairs a factory with an attrs options class: recipes give the options as a table,
`coopcore.config.structure` validates them against that class (unknown keys and wrong types
are errors naming the key path), and the factory is called with the validated instance.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Generic, Iterator, Optional, TypeVar

import attrs

from .errors import RegistryError

T = TypeVar("T")

@attrs.frozen
class NoOptions:
    """Options class of a component that takes none."""


@attrs.frozen
class Entry(Generic[T]):
    """A registered component: its factory, options class, owning plugin and a summary."""

    name: str
    factory: Callable[..., T]
    options: type
    owner: str
    summary: str


class Registry(Generic[T]):
    """The registry of one family.

    `check` is called on every factory at registration (reject what cannot be one of this
    family) and `validate` on every object a factory returns (a protocol check).  Registries
    given the same `namespace` list (the model families) reject a name another of them holds.
    """

    def __init__(
        self,
        family: str,
        check: Optional[Callable[[Callable[..., Any]], Optional[str]]] = None,
        validate: Optional[Callable[[Any], Optional[str]]] = None,
        namespace: Optional[list["Registry[Any]"]] = None,
    ) -> None:
        self.family = family
        self._entries: dict[str, Entry[T]] = {}
        self._check = check
        self._validate = validate
        self._namespace = namespace if namespace is not None else []
        self._namespace.append(self)

    # -- registration -------------------------------------------------------------------
    def add(
        self,
        name: str,
        factory: Callable[..., T],
        options: type = NoOptions,
        summary: str = "",
        *,
        owner: str,
    ) -> Entry[T]:
        if not isinstance(name, str) or not name or name != name.strip():
            raise RegistryError(f"{owner}: {self.family} name must be a non-empty string, got {name!r}")
        if name in self._entries:
            other = self._entries[name].owner
            raise RegistryError(
                f"duplicate {self.family} '{name}': registered by '{other}' and again by '{owner}'"
            )
        for peer in self._namespace:
            if peer is not self and name in peer._entries:  # noqa: SLF001 - same class
                other = peer._entries[name].owner  # noqa: SLF001
                shared = [r.family for r in self._namespace]
                raise RegistryError(
                    f"{self.family} '{name}' of plugin '{owner}' reuses the name of the {peer.family} "
                    f"'{name}' registered by '{other}': {', '.join(shared[:-1])} and {shared[-1]} names "
                    "share one namespace (a recipe names a model without its family); rename one of them"
                )
        if not callable(factory):
            raise RegistryError(f"{owner}: {self.family} '{name}' factory is not callable: {factory!r}")
        if not attrs.has(options):
            raise RegistryError(
                f"{owner}: {self.family} '{name}' options must be an attrs class, got {options!r}"
            )
        try:
            options()
        except Exception as exc:  # noqa: BLE001 - any failure means "no defaults"
            raise RegistryError(
                f"{owner}: {self.family} '{name}' options class {options.__name__} must be "
                f"constructible with defaults ({exc})"
            ) from exc
        if self._check is not None:
            problem = self._check(factory)
            if problem:
                raise RegistryError(f"{owner}: {self.family} '{name}' rejected: {problem}")
        if not summary:
            doc = inspect.getdoc(factory) or ""
            summary = doc.strip().splitlines()[0] if doc.strip() else ""
        entry = Entry(name=name, factory=factory, options=options, owner=owner, summary=summary)
        self._entries[name] = entry
        return entry

    def remove_owner(self, owner: str) -> None:
        """Drop everything `owner` registered (the rollback of a plugin that failed to load)."""
        for name in [n for n, e in self._entries.items() if e.owner == owner]:
            del self._entries[name]

    def scoped(self, owner: str) -> "ScopedRegistry[T]":
        """A view that registers on behalf of `owner` (what a plugin hook receives)."""
        return ScopedRegistry(self, owner)

    # -- lookup -------------------------------------------------------------------------
    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> list[Entry[T]]:
        return [self._entries[k] for k in sorted(self._entries)]

    def get(self, name: str, path: str = "") -> Entry[T]:
        try:
            return self._entries[name]
        except KeyError:
            where = f"'{path}': " if path else ""
            known = ", ".join(sorted(self._entries)) or "(none registered)"
            raise RegistryError(
                f"{where}unknown {self.family} '{name}'. Registered {self.family} names: {known}. "
                "Run `coop plugins` to see which plugins provide them."
            ) from None

    def create(self, name: str, options: Any = None, /, **kwargs: Any) -> T:
        """Build component `name` from validated options (defaults when None)."""
        entry = self.get(name)
        return self.instantiate(entry, entry.options() if options is None else options, **kwargs)

    def instantiate(self, entry: Entry[T], options: Any, /, **kwargs: Any) -> T:
        """Build a looked-up entry from its validated options object; check what the factory returns."""
        name = entry.name
        obj = entry.factory(options, **kwargs)
        if self._validate is not None:
            problem = self._validate(obj)
            if problem:
                raise RegistryError(
                    f"{self.family} '{name}' (from '{entry.owner}') built an object that does not "
                    f"satisfy the {self.family} protocol: {problem}"
                )
        return obj


class ScopedRegistry(Generic[T]):
    """What a plugin's hook receives: `add` records the plugin as owner."""

    def __init__(self, registry: Registry[T], owner: str) -> None:
        self._registry = registry
        self.owner = owner
        self.family = registry.family

    def add(self, name: str, factory: Callable[..., T], options: type = NoOptions, summary: str = "") -> Entry[T]:
        return self._registry.add(name, factory, options, summary, owner=self.owner)

    def __contains__(self, name: object) -> bool:
        return name in self._registry
