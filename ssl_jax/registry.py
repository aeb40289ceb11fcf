"""Name -> object registries: the one switch a config flips (big_vision style).

Every lookup failure names the bad key and lists the valid ones, so a typo in
`--config.method=maee` is a one-line fix rather than a stack trace.
"""
from typing import Any, Dict, Iterable


class Registry:
  """A dict of named objects with a clear error on unknown names."""

  def __init__(self, kind: str):
    self.kind = kind
    self._items: Dict[str, Any] = {}

  def register(self, name: str, obj: Any = None):
    """`reg.register("x", obj)` or as a decorator `@reg.register("x")`."""
    if obj is None:
      def deco(fn):
        self.register(name, fn)
        return fn
      return deco
    if name in self._items:
      raise ValueError(f"{self.kind} {name!r} is registered twice.")
    self._items[name] = obj
    return obj

  def get(self, name: str) -> Any:
    if name not in self._items:
      raise KeyError(
          f"Unknown {self.kind} {name!r}. Valid {self.kind}s: "
          f"{', '.join(sorted(self._items))}.")
    return self._items[name]

  def __contains__(self, name: str) -> bool:
    return name in self._items

  def names(self) -> Iterable[str]:
    return sorted(self._items)


def check_choice(kind: str, value: Any, choices: Iterable[Any]) -> Any:
  """Validates a config value against a closed set of choices."""
  choices = list(choices)
  if value not in choices:
    raise ValueError(f"Unknown {kind} {value!r}. Valid choices: "
                     f"{', '.join(map(str, choices))}.")
  return value
