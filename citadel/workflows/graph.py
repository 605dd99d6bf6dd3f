"""A workflow's step graph: each step's upstream steps (its ``depends_on`` plus every step its
parameters reference), the cycles among them reported as problems, and the order steps run in."""

from __future__ import annotations

import heapq

from citadel.workflows.errors import Problem, WorkflowInvalid, format_location
from citadel.workflows.references import find_references
from citadel.workflows.spec import WorkflowDefinition, is_placeholder

__all__ = ["cycle_problems", "first_index", "graph_problems", "strongly_connected", "topological_order", "upstream"]

# (step index, dependency id, location of the edge in the definition, whether it is a reference)
_Edge = tuple[int, str, str, bool]


def _edges(defn: WorkflowDefinition) -> list[_Edge]:
    """Every dependency edge with where it is declared: depends_on entries, then references."""
    edges: list[_Edge] = []
    for index, step in enumerate(defn.steps):
        for position, dep in enumerate(step.depends_on):
            edges.append((index, dep, format_location("steps", index, "depends_on", position), False))
        for ref in find_references(step.parameters):
            if ref.step_id is not None:
                edges.append((index, ref.step_id, format_location("steps", index, "parameters", *ref.where), True))
    return edges


def first_index(defn: WorkflowDefinition) -> dict[str, int]:
    first: dict[str, int] = {}
    for index, step in enumerate(defn.steps):
        first.setdefault(step.step_id, index)
    return first


def upstream(defn: WorkflowDefinition, *, transitive: bool = False) -> dict[str, set[str]]:
    """Each step's effective dependencies (``depends_on`` ∪ referenced steps) among known steps.

    Direct dependencies by default; ``transitive=True`` gives every ancestor. Unknown ids and a
    step's references to itself are left out (validation reports them).
    """
    first = first_index(defn)
    direct: dict[str, set[str]] = {step_id: set() for step_id in first}
    for index, dep, _, _ in _edges(defn):
        source = defn.steps[index].step_id
        if dep in first and dep != source:
            direct[source].add(dep)
    if not transitive:
        return direct
    closed: dict[str, set[str]] = {}
    for step_id in direct:
        seen: set[str] = set()
        stack = list(direct[step_id])
        while stack:
            dep = stack.pop()
            if dep not in seen:
                seen.add(dep)
                stack.extend(direct[dep] - seen)
        seen.discard(step_id)  # only a cycle would bring a step back to itself
        closed[step_id] = seen
    return closed


def strongly_connected(nodes: list[str], graph: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components, iteratively (no recursion limit on long chains)."""
    index_of: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for root in nodes:
        if root in index_of:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, child = work.pop()
            if child == 0:
                index_of[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            targets = graph[node]
            if child < len(targets):
                work.append((node, child + 1))
                target = targets[child]
                if target not in index_of:
                    work.append((target, 0))
                elif target in on_stack:
                    low[node] = min(low[node], index_of[target])
                continue
            if low[node] == index_of[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(component)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return components


def _dependency_graph(defn: WorkflowDefinition, first: dict[str, int]) -> tuple[dict[str, list[str]], dict[tuple[str, str], str]]:
    """Each step's known upstream steps in definition order, and where each edge is written."""
    graph: dict[str, list[str]] = {step_id: [] for step_id in sorted(first, key=first.__getitem__)}
    where: dict[tuple[str, str], str] = {}
    for index, dep, location, _ in _edges(defn):
        source = defn.steps[index].step_id
        if dep not in first or dep == source:
            continue
        if (source, dep) not in where:
            where[(source, dep)] = location
            graph[source].append(dep)
    for targets in graph.values():
        targets.sort(key=first.__getitem__)
    return graph, where


def _shortest_cycle(start: str, members: set[str], graph: dict[str, list[str]]) -> list[str]:
    """The shortest way from ``start`` back to itself inside ``members`` (breadth first), as the
    steps it passes, ``start`` first."""
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for node in frontier:
            if start in graph[node]:
                path = [node]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                return path[::-1]
            for target in graph[node]:
                if target in members and target not in parent:
                    parent[target] = node
                    following.append(target)
        frontier = following
    raise AssertionError(f"{start} is in a strongly connected set of steps but no cycle returns to it")


def cycle_problems(defn: WorkflowDefinition) -> list[Problem]:
    """One problem per group of steps that depend on each other, naming one cycle through them."""
    first = first_index(defn)
    graph, where = _dependency_graph(defn, first)
    problems: list[tuple[int, Problem]] = []
    for component in strongly_connected(list(graph), graph):
        if len(component) < 2:
            continue
        start = min(component, key=first.__getitem__)
        path = _shortest_cycle(start, set(component), graph)
        cycle = " -> ".join([*path, start])
        problems.append(
            (first[start], Problem(where[(start, path[1])], f"cycle: {cycle} (each step depends on the next)"))
        )
    return [problem for _, problem in sorted(problems, key=lambda item: item[0])]


def graph_problems(defn: WorkflowDefinition) -> list[tuple[int, Problem]]:
    """Duplicate ids, and edges to unknown steps or to the step itself."""
    first = first_index(defn)
    found: list[tuple[int, Problem]] = []
    for index, step in enumerate(defn.steps):
        if first[step.step_id] != index:
            found.append(
                (index, Problem(format_location("steps", index, "step_id"),
                                f"duplicate step id {step.step_id!r} (first declared at steps[{first[step.step_id]}])"))
            )
    known = ", ".join(step_id for step_id in first if not is_placeholder(step_id))
    for index, dep, location, is_reference in _edges(defn):
        source = defn.steps[index].step_id
        if dep == source:
            message = "a step cannot reference its own output" if is_reference else "a step cannot depend on itself"
            found.append((index, Problem(location, message)))
        elif dep not in first:
            what = "references unknown step" if is_reference else "depends on unknown step"
            found.append((index, Problem(location, f"{what} {dep!r}; steps: {known}")))
    return found


def topological_order(defn: WorkflowDefinition) -> list[str]:
    """Step ids in an order that runs every step after its effective dependencies.

    Among steps that are ready together, declaration order wins, so the order is deterministic.
    Duplicate ids, unknown or self dependencies and cycles raise :class:`WorkflowInvalid`.
    """
    problems = [problem for _, problem in graph_problems(defn)] + cycle_problems(defn)
    if problems:
        raise WorkflowInvalid(problems, defn.workflow_id)
    first = first_index(defn)
    deps = upstream(defn)
    waiting = {step_id: len(needed) for step_id, needed in deps.items()}
    dependents: dict[str, list[str]] = {step_id: [] for step_id in deps}
    for step_id, needed in deps.items():
        for dep in needed:
            dependents[dep].append(step_id)
    ready = [(first[step_id], step_id) for step_id, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        _, step_id = heapq.heappop(ready)
        order.append(step_id)
        for child in dependents[step_id]:
            waiting[child] -= 1
            if waiting[child] == 0:
                heapq.heappush(ready, (first[child], child))
    return order
