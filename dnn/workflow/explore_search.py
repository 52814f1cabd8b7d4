"""Pareto fronts and the per-layer search of `axnet explore --assign per-layer`.

Cost is minimised and accuracy maximised. The per-layer search follows ALWANN: each layer's sensitivity to each
circuit is measured alone (that circuit in that layer, the exact reference in the others), a predicted accuracy of
an assignment adds up the layers' losses (`acc0 - sum_L (acc0 - acc_L(c_L))`), and pymoo's NSGA-II searches
assignments for total cost against predicted accuracy. The cost of an assignment is the operation-weighted mean
area of its circuits (`sum_L ops_L area(c_L) / sum_L ops_L`), so a uniform assignment costs its circuit's area and
both kinds of point share one axis. The predicted front is then evaluated for real.
"""
from __future__ import annotations

import numpy as np

from circuits.errors import AxnetError


def dominates(a, b):
    """(cost, accuracy) a dominates b: no more costly, no less accurate, better in one."""
    return a[0] <= b[0] and a[1] >= b[1] and (a[0] < b[0] or a[1] > b[1])


def front_ranks(points):
    """Non-dominated sorting: rank 1 for the Pareto front, 2 for the front of the rest, ...; None for points
    without a cost or an accuracy. Slow and plain (quadratic per rank), which is fine for thousands of points."""
    ranks = [None] * len(points)
    left = [i for i, p in enumerate(points) if p[0] is not None and p[1] is not None]
    rank = 1
    while left:
        front = [i for i in left if not any(dominates(points[j], points[i]) for j in left if j != i)]
        for i in front:
            ranks[i] = rank
        left = [i for i in left if ranks[i] is None]
        rank += 1
    return ranks


def assignment_cost(areas, ops, choice):
    """Operation-weighted mean area of the circuits chosen per layer."""
    ops = np.asarray(ops, dtype=np.float64)
    weights = ops / ops.sum() if ops.sum() > 0 else np.full(len(ops), 1.0 / len(ops))
    return float(sum(w * areas[c] for w, c in zip(weights, choice)))


def predicted_accuracy(baseline, sensitivity, choice):
    """The additive estimate: baseline minus each layer's loss with its circuit alone."""
    return float(baseline - sum(baseline - sensitivity[layer][c] for layer, c in enumerate(choice)))


def search_front(areas, ops, baseline, sensitivity, generations=100, pop_size=64, seed=0):
    """NSGA-II (pymoo) over per-layer choices of circuit indices; returns the predicted Pareto set as a sorted
    list of tuples (one circuit index per layer). The uniform assignments seed the first population."""
    try:
        from pymoo.algorithms.moo.nsga2 import NSGA2
        from pymoo.core.problem import Problem
        from pymoo.operators.crossover.sbx import SBX
        from pymoo.operators.mutation.pm import PM
        from pymoo.operators.repair.rounding import RoundingRepair
        from pymoo.optimize import minimize
    except ImportError:
        raise AxnetError("--assign per-layer needs pymoo (pip install 'axnet[explore]')") from None
    n_layers, n_designs = len(ops), len(areas)
    sens = np.asarray(sensitivity, dtype=np.float64)
    area = np.asarray(areas, dtype=np.float64)
    weights = np.asarray(ops, dtype=np.float64) / max(float(np.sum(ops)), 1.0)

    class Assignments(Problem):
        def __init__(self):
            super().__init__(n_var=n_layers, n_obj=2, xl=0, xu=n_designs - 1, vtype=int)

        def _evaluate(self, x, out, *args, **kwargs):
            choice = np.clip(np.rint(x).astype(int), 0, n_designs - 1)
            cost = (area[choice] * weights).sum(1)
            loss = (baseline - sens[np.arange(n_layers), choice]).sum(1)
            out["F"] = np.column_stack([cost, loss])  # minimise cost and predicted loss

    rng = np.random.default_rng(seed)
    pop = max(pop_size, n_designs)
    uniform = np.repeat(np.arange(n_designs)[:, None], n_layers, axis=1)
    start = np.vstack([uniform, rng.integers(0, n_designs, size=(pop - n_designs, n_layers))])
    algorithm = NSGA2(pop_size=pop, sampling=start.astype(float),
                      crossover=SBX(prob=0.9, eta=3.0, vtype=float, repair=RoundingRepair()),
                      mutation=PM(prob=1.0, eta=3.0, vtype=float, repair=RoundingRepair()),
                      eliminate_duplicates=True)
    result = minimize(Assignments(), algorithm, ("n_gen", generations), seed=seed, verbose=False)
    xs = np.atleast_2d(result.X) if result.X is not None else np.zeros((0, n_layers))
    return sorted({tuple(int(v) for v in np.clip(np.rint(x), 0, n_designs - 1)) for x in xs})


def pick_spread(choices, areas, ops, limit):
    """At most `limit` assignments spread evenly over the cost axis (the cheapest and the dearest included)."""
    if len(choices) <= limit:
        return list(choices)
    by_cost = sorted(choices, key=lambda c: (assignment_cost(areas, ops, c), c))
    idx = np.unique(np.linspace(0, len(by_cost) - 1, limit).round().astype(int))
    return [by_cost[i] for i in idx]
