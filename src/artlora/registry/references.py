"""Model version references (`models:/NAME@alias`, `NAME/3`, `NAME`) and resolving them, with errors that say
what exists instead."""

from __future__ import annotations

import re
from dataclasses import dataclass

from artlora.errors import ArtloraError
from artlora.io import model_registry, settings

SCHEME = "models:/"  # a registered version's URI, as MLflow writes it; what tells one from an adapter folder
_REFERENCE = re.compile(
    r"^(?:models:/)?(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]*)(?:@(?P<alias>[A-Za-z0-9_-]+)|/(?P<version>[0-9]+))?$"
)


class RegistryError(ArtloraError):
    """A model, alias or version that is not in the registry, or a reference that cannot name one."""


@dataclass(frozen=True)
class Reference:
    name: str
    alias: str | None = None
    version: str | None = None  # neither alias nor version: the latest version

    def __str__(self) -> str:
        return self.name + (f"@{self.alias}" if self.alias else f"/{self.version}" if self.version else "")


def is_registered(text: str) -> bool:
    """Whether `text` names a registered version (models:/...) rather than a folder."""
    return text.startswith(SCHEME)


def parse(text: str) -> Reference:
    match = _REFERENCE.match(text.strip())
    if not match:
        raise RegistryError(
            f"{text!r} is not a model reference (write NAME, NAME@ALIAS or NAME/VERSION, optionally after models:/, "
            "e.g. models:/demo-style@champion)"
        )
    return Reference(match["name"], match["alias"], match["version"])


def resolve(text: str) -> model_registry.Version:
    """The model version a reference names; a RegistryError naming what exists when there is none."""
    reference = parse(text)
    aliases = model_registry.model_aliases(reference.name)
    if aliases is None:
        known = model_registry.registered_models()
        raise RegistryError(
            f"no registered model {reference.name!r} in MLflow at {settings.tracking_uri()} "
            f"(registered: {', '.join(known) or 'none'}; `artlora models list` shows them)"
        )
    if reference.alias and reference.alias not in aliases:
        have = ", ".join(f"{alias} -> {version}" for alias, version in sorted(aliases.items())) or "none"
        raise RegistryError(f"model {reference.name!r} has no alias {reference.alias!r} (its aliases: {have})")
    number = aliases[reference.alias] if reference.alias else reference.version
    if number:
        found = model_registry.model_version(reference.name, number)
        if found is None:  # also an alias whose version was deleted since the aliases were read
            raise RegistryError(f"model {reference.name!r} has no version {number} ({_versions(reference.name)})")
        return found
    versions = model_registry.model_versions(reference.name)
    if not versions:
        raise RegistryError(f"model {reference.name!r} has no versions yet (register an adapter first)")
    return versions[-1]


def _versions(name: str) -> str:
    numbers = [version.version for version in model_registry.model_versions(name)]
    return f"its versions: {', '.join(numbers)}" if numbers else "it has no versions"
