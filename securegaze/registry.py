"""Registries by name (models, attacks, detectors): the CLI, configs and benchmarks use names only."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from securegaze.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> factory table with a clear error for unknown names."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._factories[name] = factory
            return factory

        return decorator

    def create(self, name: str, **kwargs) -> T:
        return self.get(name)(**kwargs)

    def get(self, name: str) -> Callable[..., T]:
        try:
            return self._factories[name]
        except KeyError:
            known = ", ".join(sorted(self._factories))
            raise ConfigError(f"unknown {self.kind} {name!r}; expected one of: {known}") from None

    def names(self) -> list[str]:
        return sorted(self._factories)

    def __contains__(self, name: str) -> bool:
        return name in self._factories
