"""Connected components over an edge list too large for one process: min-label propagation on Ray.

The edges stay in the object store, in partitions; the driver holds one label per document (8 bytes each)
and broadcasts it each round. Each partition task proposes, for every node whose label one of its edges
can lower, the smallest such label; the driver applies the proposals and jumps pointers (so chains
collapse in O(log n) rounds). The fixed point is the same as :func:`synthforge.dedup.lsh.components`':
every document labelled with the smallest id of its component.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from synthforge.dedup.lsh import pointer_jump


def propose(labels: np.ndarray, edges: tuple[np.ndarray, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(node, smaller label) for each node whose label an edge of this partition can lower (one per node)."""
    left, right = edges[0], edges[1]
    low = np.minimum(labels[left], labels[right])
    nodes, values = np.concatenate([left, right]), np.concatenate([low, low])
    lower = values < labels[nodes]
    nodes, values = nodes[lower], values[lower]
    order = np.lexsort((values, nodes))
    nodes, values = nodes[order], values[order]
    first = np.r_[True, nodes[1:] != nodes[:-1]] if len(nodes) else np.zeros(0, bool)
    return nodes[first], values[first]


def components_ray(n: int, edge_refs: list[Any]) -> np.ndarray:
    """Component label (smallest member id) of each of ``n`` documents, from edge partitions in Ray's object
    store (each ``(left, right, ...)`` arrays)."""
    import ray

    remote = ray.remote(propose)
    labels = np.arange(n)
    while True:
        shared = ray.put(labels)
        changed = False
        for ref in [remote.remote(shared, edges) for edges in edge_refs]:
            nodes, values = ray.get(ref)
            if len(nodes):
                np.minimum.at(labels, nodes, values)
                changed = True
        del shared
        if not changed:
            return labels
        labels = pointer_jump(labels)
