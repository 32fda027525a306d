"""The import rules of the architecture page, checked rather than hoped for.

The layer and independence rules live in ``pyproject.toml`` as import-linter contracts (``make
lint`` runs them); this test checks what contracts do not: that no module, anywhere in ``scdata``
or ``scmodel``, takes part in an import cycle. Function-local imports count: a cycle hidden in a
function still means two modules cannot be understood (or moved) apart.
"""

import grimp
import pytest


@pytest.fixture(scope="module")
def graph():
    return grimp.build_graph("scdata", "scmodel", include_external_packages=False, cache_dir=None)


def _cycles(graph) -> list[set[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[set[str]] = []
    counter = 0
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(component)
    return found


def test_the_cycle_finder_finds_a_cycle():
    graph = grimp.ImportGraph()
    for module in ("a", "a.x", "a.y", "a.z"):
        graph.add_module(module)
    graph.add_import(importer="a.x", imported="a.y")
    graph.add_import(importer="a.y", imported="a.z")
    graph.add_import(importer="a.z", imported="a.x")
    assert _cycles(graph) == [{"a.x", "a.y", "a.z"}]


def test_no_module_is_in_an_import_cycle(graph):
    assert _cycles(graph) == []


def test_nothing_imports_a_main_module(graph):
    mains = {m for m in graph.modules if m.endswith(".__main__")}
    importers = {m: graph.find_modules_that_directly_import(m) for m in mains}
    assert all(not found for found in importers.values()), importers


def test_scdata_never_imports_scmodel(graph):
    assert not any(
        m.startswith("scmodel") for s in graph.modules if s.startswith("scdata") for m in graph.find_modules_directly_imported_by(s)
    )
