"""The group tree: folders, static and dynamic groups, lazily expanded, with member counts.

Children are added when their parent is first expanded (a large tree expanded eagerly took
~7 s against 0.15 s lazily), and counts are computed in a thread worker; a label shows ``…``
until its count arrives.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import work
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import Tree
from textual.widgets.tree import TreeNode

from fleet_tui.registry.errors import RegistryError
from fleet_tui.registry.registry import GroupNode, Registry
from fleet_tui.tui.screens.group_editor import GroupEditorScreen

KIND_ICONS = {"folder": "▸", "static": "■", "dynamic": "◆"}
ALL_DEVICES = "All devices"


def group_label(name: str, kind: str | None, count: int | None) -> Text:
    icon = KIND_ICONS.get(kind or "", "●")
    label = Text(f"{icon} {name} ")
    label.append(f"({'…' if count is None else count})", style="dim")
    return label


class GroupTree(Tree[GroupNode | None]):
    """The fleet's groups. Enter selects a group (and expands it); the device table follows."""

    HELP = (
        "The fleet's groups: ▸ folder, ■ static (listed members), ◆ dynamic (a query). "
        "A group's devices include its subgroups'. Enter selects the group and shows its "
        "devices; Space expands or collapses; the number is the member count. n creates a "
        "dynamic group (under the highlighted folder), e edits the highlighted dynamic "
        "group's query with a live count of its matches."
    )
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "select_cursor", "Select", id="groups.select"),
        Binding("space", "toggle_node", "Expand", id="groups.toggle"),
        Binding("n", "new_group", "New group", id="groups.new"),
        Binding("e", "edit_group", "Edit query", id="groups.edit"),
        Binding("r", "reload", "Reload", show=False, id="groups.reload"),
    ]
    MUTATING_ACTIONS: ClassVar[frozenset[str]] = frozenset({"new_group", "edit_group"})

    class GroupSelected(Message):
        """A group was chosen; ``group`` is None for the whole fleet."""

        def __init__(self, group: str | None) -> None:
            super().__init__()
            self.group = group

    class TreeReady(Message):
        def __init__(self, roots: list[GroupNode]) -> None:
            super().__init__()
            self.roots = roots

    class CountsReady(Message):
        def __init__(self, counts: dict[str | None, int]) -> None:
            super().__init__()
            self.counts = counts

    def __init__(
        self, registry: Registry, *, id: str | None = None, classes: str | None = None
    ) -> None:
        super().__init__(group_label(ALL_DEVICES, None, None), data=None, id=id, classes=classes)
        self.registry = registry
        self.counts: dict[str | None, int] = {}
        self.guide_depth = 2
        self.group_names: list[str] = []
        self._reselect: str | None = None

    def on_mount(self) -> None:
        self.root.expand()
        self.action_reload()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in self.MUTATING_ACTIONS and getattr(self.app, "read_only", False):
            return False
        if action == "edit_group":
            node = self.cursor_node
            return node is not None and node.data is not None and node.data.kind == "dynamic"
        return True

    def on_tree_node_highlighted(self, event: Tree.NodeHighlighted[GroupNode | None]) -> None:
        self.refresh_bindings()

    def action_new_group(self) -> None:
        node = self.cursor_node
        data = node.data if node is not None else None
        parent = data.name if data is not None and data.kind == "folder" else None
        self._open_editor(GroupEditorScreen(self.registry, parent=parent))

    def action_edit_group(self) -> None:
        node = self.cursor_node
        if node is not None and node.data is not None and node.data.kind == "dynamic":
            self._open_editor(GroupEditorScreen(self.registry, node.data))

    def _open_editor(self, editor: GroupEditorScreen) -> None:
        def saved(name: str | None) -> None:
            if name is not None:
                self.app.notify(f"saved dynamic group {name!r}", title="group")
                self._reselect = name
                self.action_reload()

        self.app.push_screen(editor, saved)

    def action_reload(self) -> None:
        self._load_tree()

    @work(thread=True, exclusive=True, group="group-tree")
    def _load_tree(self) -> None:
        self.post_message(self.TreeReady(self.registry.group_tree()))

    @work(thread=True, group="group-counts")
    def _load_counts(self, names: list[str | None]) -> None:
        counts: dict[str | None, int] = {}
        for name in names:
            try:
                counts[name] = self.registry.count_devices(group=name)
            except RegistryError:
                continue  # deleted meanwhile: the label keeps "…" until the next reload
        self.post_message(self.CountsReady(counts))

    def on_group_tree_tree_ready(self, message: TreeReady) -> None:
        message.stop()
        self.root.remove_children()
        self.group_names = sorted(all_group_names(message.roots))
        self._add_group_nodes(self.root, message.roots)
        self._load_counts([None, *(n.name for n in message.roots)])
        if self._reselect is not None:
            name, self._reselect = self._reselect, None
            self.select_group(name)

    def on_group_tree_counts_ready(self, message: CountsReady) -> None:
        message.stop()
        self.counts.update(message.counts)
        self._relabel(self.root)
        # set_label repaints a line but keeps the tree's width from its last build, so a
        # label that grew would stay cut off with no scrollbar until the next expand.
        self._invalidate()

    def _relabel(self, node: TreeNode[GroupNode | None]) -> None:
        data = node.data
        name = data.name if data is not None else None
        if name in self.counts:
            node.set_label(group_label(data.name if data else ALL_DEVICES,
                                       data.kind if data else None, self.counts[name]))
        for child in node.children:
            self._relabel(child)

    def _add_group_nodes(self, parent: TreeNode[GroupNode | None], groups: list[GroupNode]) -> None:
        for group in sorted(groups, key=lambda g: g.name):
            parent.add(
                group_label(group.name, group.kind, self.counts.get(group.name)),
                data=group,
                allow_expand=bool(group.children),
            )

    def on_tree_node_expanded(self, event: Tree.NodeExpanded[GroupNode | None]) -> None:
        node = event.node
        if node.data is not None and node.data.children and not node.children:
            self._add_group_nodes(node, node.data.children)
            self._load_counts([c.name for c in node.data.children])

    def on_tree_node_selected(self, event: Tree.NodeSelected[GroupNode | None]) -> None:
        event.stop()
        data = event.node.data
        self.post_message(self.GroupSelected(data.name if data is not None else None))

    def select_group(self, name: str) -> bool:
        """Expand the path to ``name``, move the cursor there and select it."""
        path = _path_to(self.root, name)
        if path is None:
            return False
        node = self.root
        for group in path:
            node.expand()
            if node.data is not None and not node.children and node.data.children:
                self._add_group_nodes(node, node.data.children)
                self._load_counts([c.name for c in node.data.children])
            found = next((c for c in node.children if c.data is group), None)
            if found is None:
                return False
            node = found
        self.move_cursor(node)
        self.post_message(self.GroupSelected(name))
        return True


def all_group_names(groups: list[GroupNode]) -> list[str]:
    out: list[str] = []
    for group in groups:
        out.append(group.name)
        out.extend(all_group_names(group.children))
    return out


def _path_to(root: TreeNode[GroupNode | None], name: str) -> list[GroupNode] | None:
    def walk(groups: list[GroupNode]) -> list[GroupNode] | None:
        for group in groups:
            if group.name == name:
                return [group]
            below = walk(group.children)
            if below is not None:
                return [group, *below]
        return None

    roots = [c.data for c in root.children if c.data is not None]
    return walk(roots)
