"""The role registry: which Cell classes a node starts when it differentiates into a role.

Applications extend it in code (``registry.register("web", MyWebCell)``) or, for installed
packages, with entry points in the group ``cellframe.roles`` (name = role, value = the Cell
class): every node then carries every role, as the stem-cell design asks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ..errors import ConfigError
from ..wire.routing import validate_name

__all__ = ["ENTRY_POINT_GROUP", "RoleRegistry"]

ENTRY_POINT_GROUP = "cellframe.roles"


class RoleRegistry:
    """Maps role names to the Cell classes that play them."""

    def __init__(self, roles: Mapping[str, Iterable[type]] | None = None):
        self._roles: dict[str, list[type]] = {}
        for role, classes in (roles or {}).items():
            for cls in classes:
                self.register(role, cls)

    def register(self, role: str, cell_class: type) -> None:
        """Add ``cell_class`` to the cells started for ``role`` (idempotent)."""
        from ..cell.cell import Cell

        validate_name(role, "role")
        if not (isinstance(cell_class, type) and issubclass(cell_class, Cell)):
            raise ConfigError(f"role {role!r}: {cell_class!r} is not a Cell subclass")
        classes = self._roles.setdefault(role, [])
        if cell_class not in classes:
            classes.append(cell_class)

    def cells_for(self, role: str) -> list[type]:
        """The classes to start for ``role``; an unknown role is a ConfigError."""
        try:
            return list(self._roles[role])
        except KeyError:
            raise ConfigError(
                f"no cells are registered for role {role!r} (known: {', '.join(sorted(self._roles)) or 'none'})"
            ) from None

    def __contains__(self, role: object) -> bool:
        return role in self._roles

    @property
    def roles(self) -> list[str]:
        return sorted(self._roles)

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> RoleRegistry:
        """Register every ``role = module:Class`` entry point of installed packages."""
        from importlib.metadata import entry_points  # 20 ms to import: only when plug-ins are read

        for point in entry_points(group=group):
            try:
                cell_class = point.load()
            except Exception as exc:  # a broken plug-in must not stop the node
                raise ConfigError(f"entry point {point.name} = {point.value} failed to load: {exc}") from exc
            self.register(point.name, cell_class)
        return self

