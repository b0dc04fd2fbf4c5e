"""The command palette, in "category: action" form (`group: eu-west`, `view: devices`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, cast

from textual.command import DiscoveryHit, Hit, Hits, Provider

if TYPE_CHECKING:
    from fleet_tui.tui.app import FleetApp

Command = tuple[str, Callable[[], object], str]


class FleetCommands(Provider):
    """Views, groups and filters of the fleet console."""

    async def startup(self) -> None:
        app = cast("FleetApp", self.app)
        self.groups = await asyncio.to_thread(app.group_names)

    def commands(self) -> list[Command]:
        app = cast("FleetApp", self.app)
        found: list[Command] = [
            ("view: groups", partial(app.show_view, "groups"), "focus the group tree"),
            ("view: devices", partial(app.show_view, "devices"), "focus the device table"),
            ("view: health", partial(app.show_view, "health"), "health of the selected group"),
            ("view: all devices", partial(app.show_group, None), "the whole fleet"),
            ("view: rollouts", partial(app.show_view, "rollouts"), "rollouts and their waves"),
            ("view: jobs", partial(app.show_view, "jobs"), "bulk jobs and their progress"),
            ("view: audit", partial(app.show_view, "audit"), "the audit log, chain verified"),
            ("view: alerts", partial(app.show_view, "alerts"), "open alerts and policies"),
            ("filter: devices", app.action_filter, "filter the device table with a query"),
            ("filter: clear", partial(app.apply_filter, ""), "show the whole group again"),
        ]
        found += [(f"group: {name}", partial(app.show_group, name), "show this group's devices")
                  for name in self.groups]
        return found

    async def discover(self) -> Hits:
        for text, callback, help_text in self.commands():
            if not text.startswith("group: "):
                yield DiscoveryHit(text, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for text, callback, help_text in self.commands():
            score = matcher.match(text)
            if score > 0:
                yield Hit(score, matcher.highlight(text), callback, help=help_text)
