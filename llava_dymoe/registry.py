"""One small generic registry used for every extension point (style.md §6.5).

Names are normalised (lower case, ``-`` -> ``_``) so ``--dymoe_method IncMoELoRA`` and
``incmoelora`` find the same entry.  Registration happens when the defining module is
imported; nothing scans the file system.  An unknown name raises ``KeyError`` listing the
known names and the closest matches.
"""
from __future__ import annotations

import difflib
from typing import Callable, Dict, Generic, Iterable, List, TypeVar

T = TypeVar("T")


def _norm(name: str) -> str:
    return str(name).strip().lower().replace("-", "_")


class Registry(Generic[T]):
    """A named mapping ``name -> object`` with aliases and helpful errors."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: Dict[str, T] = {}
        self._aliases: Dict[str, str] = {}

    def register(self, name: str, *, aliases: Iterable[str] = (), override: bool = False) -> Callable[[T], T]:
        """Decorator form: ``@REG.register("name")``. Also usable as ``REG.register("n")(obj)``."""
        key = _norm(name)
        alias_keys = [_norm(a) for a in aliases]

        def deco(obj: T) -> T:
            for k in [key, *alias_keys]:
                if not override and (k in self._items or k in self._aliases):
                    raise ValueError(f"{self.kind} {k!r} is already registered; pass override=True to replace it")
            self._items[key] = obj
            for a in alias_keys:
                self._aliases[a] = key
            return obj

        return deco

    def add(self, name: str, obj: T, **kw) -> T:
        return self.register(name, **kw)(obj)

    def get(self, name: str) -> T:
        key = _norm(name)
        key = self._aliases.get(key, key)
        if key not in self._items:
            known = self.names()
            close = difflib.get_close_matches(key, known + list(self._aliases), n=3)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise KeyError(f"unknown {self.kind} {name!r}. Known {self.kind}s: {', '.join(known) or '(none)'}.{hint}")
        return self._items[key]

    def names(self) -> List[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = _norm(name)
        return key in self._items or key in self._aliases

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
