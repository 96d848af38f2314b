"""hungarian_matching vs scipy's linear_sum_assignment (and brute force for tiny cases)."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from seg_jax.ops import hungarian_matching, hungarian_matching_scipy

_batched = jax.jit(hungarian_matching)


def _random_costs(rng, batch, n, m, kind):
  if kind == "float":
    return rng.normal(size=(batch, n, m)).astype(np.float32)
  if kind == "ties":  # Few distinct integers: many optimal assignments.
    return rng.integers(0, 4, size=(batch, n, m)).astype(np.float32)
  return rng.integers(-50, 50, size=(batch, n, m)).astype(np.int32)


def _check_pairs(rows, cols, n, m):
  k = min(n, m)
  assert rows.shape == cols.shape == (k,)
  assert np.all(np.diff(rows) > 0), "rows must be strictly increasing (scipy order)"
  assert len(set(cols.tolist())) == k, "columns must be distinct"
  assert rows.min(initial=0) >= 0 and rows.max(initial=0) < n
  assert cols.min(initial=0) >= 0 and cols.max(initial=0) < m


@pytest.mark.parametrize("n,m", [(1, 1), (5, 5), (8, 3), (3, 8), (12, 30), (30, 12)])
def test_optimal_cost_equals_scipy_under_jit_and_vmap(n, m):
  rng = np.random.default_rng(n * 100 + m)
  costs = np.concatenate([_random_costs(rng, 8, n, m, kind).astype(np.float32)
                          for kind in ("float", "ties", "int")])
  rows, cols = map(np.asarray, _batched(jnp.asarray(costs)))  # vmapped over the batch
  for b in range(costs.shape[0]):
    _check_pairs(rows[b], cols[b], n, m)
    ref_rows, ref_cols = linear_sum_assignment(costs[b])
    np.testing.assert_allclose(costs[b][rows[b], cols[b]].sum(),
                               costs[b][ref_rows, ref_cols].sum(), rtol=1e-5, atol=1e-4)


def test_integer_costs_with_ties():
  rng = np.random.default_rng(3)
  cost = rng.integers(0, 3, size=(6, 9)).astype(np.int32)
  rows, cols = map(np.asarray, _batched(cost))
  ref_rows, ref_cols = linear_sum_assignment(cost)
  assert cost[rows, cols].sum() == cost[ref_rows, ref_cols].sum()


def test_matches_brute_force_on_small_matrices():
  rng = np.random.default_rng(0)
  for n, m in [(3, 3), (2, 4), (4, 2)]:
    costs = rng.random((5, n, m)).astype(np.float32)
    all_rows, all_cols = map(np.asarray, _batched(costs))
    for cost, rows, cols in zip(costs, all_rows, all_cols):
      small, perms = (cost, itertools.permutations(range(m), n)) if n <= m else (
          cost.T, itertools.permutations(range(n), m))
      best = min(sum(small[i, p[i]] for i in range(len(p))) for p in perms)
      np.testing.assert_allclose(cost[rows, cols].sum(), best, rtol=1e-6)


def test_unique_optimum_is_recovered_exactly():
  perm = np.array([3, 0, 4, 1, 2])
  cost = np.ones((5, 5), np.float32)
  cost[np.arange(5), perm] = 0
  rows, cols = _batched(cost)
  np.testing.assert_array_equal(rows, np.arange(5))
  np.testing.assert_array_equal(cols, perm)


@pytest.mark.parametrize("n,m", [(10, 6), (4, 9), (6, 6)])
def test_padded_columns_are_ignored(n, m):
  """The valid part of the matching is optimal for the cost restricted to valid columns."""
  rng = np.random.default_rng(n + m)
  costs = rng.normal(size=(12, n, m)).astype(np.float32)
  valid = rng.random((12, m)) < 0.6
  valid[0] = False  # An image without targets.
  valid[1] = True
  rows, cols = map(np.asarray, _batched(jnp.asarray(costs), jnp.asarray(valid)))
  for b in range(costs.shape[0]):
    _check_pairs(rows[b], cols[b], n, m)
    keep = valid[b][cols[b]]
    num_valid = valid[b].sum()
    assert keep.sum() == min(n, num_valid), "every valid column is matched if rows suffice"
    got = costs[b][rows[b][keep], cols[b][keep]].sum()
    if num_valid == 0:
      continue
    sub = costs[b][:, valid[b]]
    ref_rows, ref_cols = linear_sum_assignment(sub)
    np.testing.assert_allclose(got, sub[ref_rows, ref_cols].sum(), rtol=1e-5, atol=1e-4)
    # The scipy helper obeys the same contract.
    s_rows, s_cols = hungarian_matching_scipy(costs[b], valid[b])
    _check_pairs(s_rows, s_cols, n, m)
    s_keep = valid[b][s_cols]
    np.testing.assert_allclose(costs[b][s_rows[s_keep], s_cols[s_keep]].sum(), got,
                               rtol=1e-5, atol=1e-4)


def test_non_finite_entries_are_avoided():
  cost = np.array([[np.inf, 1.0, 5.0], [2.0, np.nan, 1.0], [1.0, 3.0, np.inf]], np.float32)
  rows, cols = map(np.asarray, _batched(cost))
  np.testing.assert_array_equal(cols, [1, 2, 0])


def test_scipy_helper_batches_and_agrees():
  rng = np.random.default_rng(1)
  costs = rng.random((2, 3, 7, 4))
  rows, cols = hungarian_matching_scipy(costs)
  j_rows, j_cols = map(np.asarray, _batched(jnp.asarray(costs, jnp.float32)))
  assert rows.shape == cols.shape == j_rows.shape == j_cols.shape == (2, 3, 4)
  flat = costs.reshape(6, 7, 4)
  for b, (r, c, jr, jc) in enumerate(zip(rows.reshape(6, 4), cols.reshape(6, 4),
                                         j_rows.reshape(6, 4), j_cols.reshape(6, 4))):
    np.testing.assert_allclose(flat[b][jr, jc].sum(), flat[b][r, c].sum(), rtol=1e-5)


def test_jit_does_not_retrace_and_empty_and_errors():
  traces = []

  @jax.jit
  def f(c):
    traces.append(1)
    return hungarian_matching(c)

  rng = np.random.default_rng(2)
  for _ in range(3):
    f(jnp.asarray(rng.random((4, 6)), jnp.float32))
  assert len(traces) == 1
  rows, cols = hungarian_matching(jnp.zeros((3, 0)))
  assert rows.shape == cols.shape == (0,)
  with pytest.raises(ValueError, match="cost must be"):
    hungarian_matching(jnp.zeros((3,)))
  with pytest.raises(ValueError, match="col_valid"):
    hungarian_matching(jnp.zeros((3, 4)), jnp.ones((3,), bool))
