"""Hungarian matching (linear sum assignment) inside the compiled graph, plus a scipy reference.

:func:`hungarian_matching` is the O(r^2 c) shortest-augmenting-path algorithm with dual
potentials (Jonker-Volgenant style, as in the e-maxx formulation) written with ``lax`` loops,
so it jits, vmaps and runs on the device with no host callback. DETR needs one matching per
image per decoder layer per step; keeping it in the graph avoids a device->host round trip.

Output convention (identical to ``scipy.optimize.linear_sum_assignment``): for an ``(n, m)``
cost it returns ``k = min(n, m)`` pairs ``(rows[i], cols[i])`` with ``rows`` strictly
increasing, so ``cost[rows, cols].sum()`` is minimal. For ``n <= m`` this means
``rows == arange(n)`` and ``cols[i]`` is the column given to row ``i``.

Padding: pass ``col_valid`` (``(m,)`` bool) to mark padded columns (e.g. padded targets).
The result is then optimal for the valid columns only; pairs whose column is padding are
still returned (the shapes stay static) and the caller drops them with ``col_valid[cols]``.
Non-finite costs are treated as forbidden (larger than any finite cost).
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


def _solve_rows_le_cols(cost: jax.Array) -> jax.Array:
  """Optimal assignment for ``cost (r, c)`` with ``r <= c``; returns the column of each row.

  Potentials ``u`` (rows) and ``v`` (columns) keep ``cost[i, j] - u[i] - v[j] >= 0`` with
  equality on matched pairs. Rows are added one at a time; each addition runs a Dijkstra-like
  search over reduced costs until it reaches a free column, then flips the alternating path.
  Index 0 of ``u``/``v``/``p`` is a sentinel (``p[0]`` holds the row being inserted).
  """
  r, c = cost.shape
  a = jnp.zeros((r + 1, c + 1), cost.dtype).at[1:, 1:].set(cost)
  inf = jnp.array(jnp.inf, cost.dtype)

  def insert_row(i, carry):
    u, v, p, way = carry
    p = p.at[0].set(i)

    def search_step(state):
      u, v, p, way, minv, used, j0, _ = state
      used = used.at[j0].set(True)
      i0 = p[j0]
      reduced = a[i0] - u[i0] - v
      better = jnp.logical_and(~used, reduced < minv)
      minv = jnp.where(better, reduced, minv)
      way = jnp.where(better, j0, way)
      candidates = jnp.where(used, inf, minv)
      j1 = jnp.argmin(candidates).astype(jnp.int32)
      delta = candidates[j1]
      # Used columns have distinct rows p[j]; unused ones add 0 so collisions are harmless.
      u = u.at[p].add(jnp.where(used, delta, 0))
      v = jnp.where(used, v - delta, v)
      minv = jnp.where(used, minv, minv - delta)
      return u, v, p, way, minv, used, j1, p[j1]

    minv = jnp.full((c + 1,), inf)
    used = jnp.zeros((c + 1,), bool)
    state = (u, v, p, way, minv, used, jnp.int32(0), i)
    u, v, p, way, _, _, j0, _ = lax.while_loop(lambda s: s[-1] != 0, search_step, state)

    def flip_step(state):
      p, j0 = state
      j1 = way[j0]
      return p.at[j0].set(p[j1]), j1

    p, _ = lax.while_loop(lambda s: s[1] != 0, flip_step, (p, j0))
    return u, v, p, way

  init = (jnp.zeros((r + 1,), cost.dtype), jnp.zeros((c + 1,), cost.dtype),
          jnp.zeros((c + 1,), jnp.int32), jnp.zeros((c + 1,), jnp.int32))
  _, _, p, _ = lax.fori_loop(1, r + 1, insert_row, init)
  # p[j] is the (1-based) row matched to column j, 0 if free; invert it.
  col_of_row = jnp.zeros((r + 1,), jnp.int32).at[p].set(jnp.arange(c + 1, dtype=jnp.int32))
  return col_of_row[1:] - 1


def _prepare(cost: jax.Array, col_valid: Optional[jax.Array]) -> jax.Array:
  """Makes every entry finite: forbidden entries get a cost no optimal matching would pay.

  A forbidden entry costs ``hi + k * (hi - lo + 1)``, more than any assignment that avoids
  forbidden entries wherever possible. Padded columns on the smaller side are instead set to
  0: every row of the smaller side is matched anyway, so a constant row changes nothing and
  the result stays exact (no large constant, no rounding).
  """
  n, m = cost.shape
  allowed = jnp.isfinite(cost)
  if col_valid is not None:
    allowed = jnp.logical_and(allowed, col_valid[None, :])
  lo = jnp.min(jnp.where(allowed, cost, jnp.inf))
  hi = jnp.max(jnp.where(allowed, cost, -jnp.inf))
  lo = jnp.where(jnp.isfinite(lo), lo, 0)
  hi = jnp.where(jnp.isfinite(hi), hi, 0)
  forbidden_cost = hi + min(n, m) * (hi - lo + 1)
  cost = jnp.where(allowed, cost, forbidden_cost)
  if col_valid is not None and m <= n:
    cost = jnp.where(col_valid[None, :], cost, 0)
  return cost


def hungarian_matching(cost: jax.Array,
                       col_valid: Optional[jax.Array] = None) -> tuple[jax.Array, jax.Array]:
  """Minimum-cost assignment for ``cost (..., n, m)``; returns ``rows, cols (..., min(n, m))``.

  Exact, jittable and vmappable (leading batch dimensions are vmapped automatically). Rows
  come back sorted ascending as in scipy. ``col_valid (..., m)`` marks real columns; pairs
  with a padded column must be dropped by the caller (see the module docstring).
  """
  cost = jnp.asarray(cost)
  if cost.ndim < 2:
    raise ValueError(f"hungarian_matching: cost must be (..., n, m), got shape {cost.shape}")
  if col_valid is not None:
    col_valid = jnp.asarray(col_valid, bool)
    if col_valid.shape != cost.shape[:-2] + cost.shape[-1:]:
      raise ValueError(f"hungarian_matching: col_valid shape {col_valid.shape} does not match "
                       f"cost shape {cost.shape}")
  if cost.ndim > 2:
    if col_valid is None:
      return jax.vmap(hungarian_matching)(cost)
    return jax.vmap(hungarian_matching)(cost, col_valid)
  n, m = cost.shape
  if n == 0 or m == 0:
    empty = jnp.zeros((0,), jnp.int32)
    return empty, empty
  if not jnp.issubdtype(cost.dtype, jnp.floating):
    cost = cost.astype(jnp.float32)
  cost = _prepare(cost, col_valid)
  if n <= m:
    return jnp.arange(n, dtype=jnp.int32), _solve_rows_le_cols(cost)
  # More rows than columns: solve the transpose, then sort the pairs by row like scipy.
  rows_of_cols = _solve_rows_le_cols(cost.T)
  order = jnp.argsort(rows_of_cols)
  return rows_of_cols[order], jnp.arange(m, dtype=jnp.int32)[order]


def hungarian_matching_scipy(cost, col_valid=None) -> tuple[np.ndarray, np.ndarray]:
  """Host reference with the same contract (numpy in/out, leading batch dims looped).

  Padded columns are removed before calling scipy; the result is filled back up to
  ``min(n, m)`` pairs with padded columns (which callers drop) so both functions are
  interchangeable. Used by the tests and as a host matcher in the benchmark.
  """
  from scipy.optimize import linear_sum_assignment  # pylint: disable=g-import-not-at-top
  cost = np.asarray(cost)
  if cost.ndim < 2:
    raise ValueError(f"hungarian_matching_scipy: cost must be (..., n, m), got {cost.shape}")
  if cost.ndim > 2:
    flat = cost.reshape((-1,) + cost.shape[-2:])
    valid = (None if col_valid is None
             else np.asarray(col_valid, bool).reshape(-1, cost.shape[-1]))
    pairs = [hungarian_matching_scipy(c, None if valid is None else valid[b])
             for b, c in enumerate(flat)]
    shape = cost.shape[:-2] + (min(cost.shape[-2:]),)
    return (np.stack([p[0] for p in pairs]).reshape(shape),
            np.stack([p[1] for p in pairs]).reshape(shape))
  n, m = cost.shape
  cost = np.where(np.isfinite(cost), cost, np.finfo(np.float64).max / (4 * max(n, m, 1)))
  if col_valid is None:
    rows, cols = linear_sum_assignment(cost)
    return rows.astype(np.int32), cols.astype(np.int32)
  valid = np.flatnonzero(np.asarray(col_valid, bool))
  rows, sub_cols = linear_sum_assignment(cost[:, valid])
  cols = valid[sub_cols]
  k = min(n, m)
  if len(rows) < k:  # Fill with padded columns / unused rows so the shapes match.
    free_rows = np.setdiff1d(np.arange(n), rows)
    pad_cols = np.setdiff1d(np.arange(m), valid)
    extra = k - len(rows)
    rows = np.concatenate([rows, free_rows[:extra]])
    cols = np.concatenate([cols, pad_cols[:extra]])
    order = np.argsort(rows, kind="stable")
    rows, cols = rows[order], cols[order]
  return rows.astype(np.int32), cols.astype(np.int32)
