"""The DAG's order and its cycles, with the standard library's graphlib."""

from __future__ import annotations

from graphlib import CycleError, TopologicalSorter


def find_cycle(edges: dict[str, list[str]]) -> list[str] | None:
    """A cycle as a path in execution order, `[a, b, a]` (b depends on a), or None.

    `edges` maps a stage to its upstreams.
    """
    try:
        TopologicalSorter(edges).prepare()
    except CycleError as err:
        return list(err.args[1])
    return None


def order(edges: dict[str, list[str]], hint: list[str]) -> list[str]:
    """Every node of `hint` with its upstreams first; among stages that are ready together, the
    order of `hint` (the pipeline file's). Assumes no cycle (`find_cycle` first)."""
    sorter = TopologicalSorter({n: [u for u in edges.get(n, []) if u in edges] for n in hint})
    sorter.prepare()
    position = {name: i for i, name in enumerate(hint)}
    done: list[str] = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready(), key=position.__getitem__)
        done.extend(ready)
        sorter.done(*ready)
    return done
