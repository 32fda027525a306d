"""The traced forward pass as a graph of drawable nodes: components with repeated list items
collapsed (``blocks.0-5``), model inputs, and the data-flow edges between them."""

from __future__ import annotations

from dataclasses import dataclass

from .analysis import Analysis
from .inspect import Call


@dataclass
class Node:
    label: str
    names: list[str]
    group: str
    kind: str
    params: int
    call: Call | None
    """The first instance's first call (shapes)."""
    order: int

    @property
    def count(self) -> int:
        return len(self.names)

    @property
    def is_input(self) -> bool:
        return self.label.startswith("input:")

    @property
    def title(self) -> str:
        return self.label + (f"  x{self.count}" if self.count > 1 else "")


def nodes(a: Analysis) -> list[Node]:
    """Components in the order they first run (components that never ran come last)."""
    order = {}
    for i, call in enumerate(a.calls):
        order.setdefault(call.name, i)
    out = []
    for group, members in a.parts.groups:
        for label, names in a.collapsed(members):
            call = a.first_call(names[0])
            kind = call.kind if call else type(a.modules[names[0]]).__name__
            out.append(Node(label, names, group, kind, a.component_params(names), call, order.get(names[0], 10**9)))
    return sorted(out, key=lambda n: n.order)


def label_of(all_nodes: list[Node]) -> dict[str, str]:
    return {name: n.label for n in all_nodes for name in n.names}


def edges(a: Analysis, all_nodes: list[Node]) -> set[tuple[str, str]]:
    """(source label, target label): a component's or input's output reaches the target's inputs."""
    where = label_of(all_nodes)
    out = set()
    for call in a.calls:
        if call.name not in where:
            continue
        for source in call.sources:
            src = source if source.startswith("input:") else where.get(source)
            if src and src != where[call.name]:
                out.add((src, where[call.name]))
    return out


def arg_edges(a: Analysis, all_nodes: list[Node]) -> dict[str, dict[str, set[str]]]:
    """target label -> argument name -> source labels (first instance of the target)."""
    where = label_of(all_nodes)
    out: dict[str, dict[str, set[str]]] = {}
    for n in all_nodes:
        if n.call is None:
            continue
        per = {}
        for arg, sources in n.call.arg_sources.items():
            per[arg] = {s if s.startswith("input:") else where.get(s, s) for s in sources}
        out[n.label] = per
    return out


def ancestors(edge_set: set[tuple[str, str]], target: str) -> set[str]:
    parents: dict[str, set[str]] = {}
    for s, t in edge_set:
        parents.setdefault(t, set()).add(s)
    seen, stack = set(), [target]
    while stack:
        for p in parents.get(stack.pop(), ()):
            if p not in seen:
                seen.add(p)
                stack.append(p)
    return seen


def trunk_group(all_nodes: list[Node]) -> str:
    """The group that produces the model's output (its last component to run)."""
    ran = [n for n in all_nodes if n.call is not None]
    return ran[-1].group if ran else all_nodes[-1].group
