"""Dependencies point one way (DESIGN.md): experiments -> seg_jax.training -> seg_jax.tasks ->
models/losses/metrics/data/... -> layers -> ops. Every import statement of every seg_jax
module (function-local ones included) is read with ``ast`` and checked against the ranks."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Higher rank = higher level; a module may import its own rank or lower ones.
RANKS = {
    "experiments": 6,
    "seg_jax.training": 5, "seg_jax.benchmarks": 5, "seg_jax.predict": 5,
    "seg_jax.coco_eval": 5,
    "seg_jax.tasks": 4, "seg_jax.style": 4,
    "seg_jax.models": 3, "seg_jax.losses": 3, "seg_jax.metrics": 3, "seg_jax.metrics_coco": 3,
    "seg_jax.inference": 3, "seg_jax.weights": 3, "seg_jax.data": 3, "seg_jax.visualize": 3,
    "seg_jax.pretrained": 3, "seg_jax.charts": 3,
    "seg_jax.layers": 2,
    "seg_jax.ops": 1,
}


def rank(module: str):
  """Rank of the longest matching prefix; ``seg_jax`` itself (the package) is rank 0."""
  best = None
  for prefix, value in RANKS.items():
    if module == prefix or module.startswith(prefix + "."):
      if best is None or len(prefix) > len(best[0]):
        best = (prefix, value)
  return None if best is None else best[1]


def module_name(path: pathlib.Path) -> str:
  parts = list(path.relative_to(ROOT).with_suffix("").parts)
  if parts[-1] == "__init__":
    parts = parts[:-1]
  return ".".join(parts)


def imported_modules(path: pathlib.Path, name: str):
  tree = ast.parse(path.read_text())
  package = name if path.name == "__init__.py" else name.rpartition(".")[0]
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for alias in node.names:
        yield node.lineno, alias.name
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        anchor = package.split(".")
        anchor = anchor[:len(anchor) - node.level + 1]
        base = ".".join(anchor + ([base] if base else []))
      for alias in node.names:  # 'from seg_jax import data' imports seg_jax.data
        yield node.lineno, f"{base}.{alias.name}" if rank(f"{base}.{alias.name}") else base


SOURCES = sorted((ROOT / "seg_jax").rglob("*.py"))


def test_every_seg_jax_module_has_a_rank():
  unranked = [module_name(p) for p in SOURCES
              if module_name(p) != "seg_jax" and rank(module_name(p)) is None]
  assert not unranked, f"add these modules to RANKS: {unranked}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_down(path):
  name = module_name(path)
  own = rank(name) if name != "seg_jax" else 0
  upward = []
  for line, target in imported_modules(path, name):
    if not (target == "experiments" or target.startswith(("experiments.", "seg_jax"))):
      continue
    target_rank = rank(target)
    if target.startswith("experiments") or (target_rank is not None and own is not None
                                            and target_rank > own):
      upward.append(f"line {line}: {target}")
  assert not upward, f"{name} (rank {own}) imports upward: {upward}"
