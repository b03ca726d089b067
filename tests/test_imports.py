"""The package's import graph, read with `ast` from the sources under gan_jax/ (nothing imported
but `gan_jax.models`, for its family registry):

* model families stay behind `gan_jax.models` (`Family`, `family_of`, `describe`): no module
  outside gan_jax/models/ tests `isinstance` / `issubclass` on a family's classes;
* gan_jax/models/ imports nothing of gan_jax outside itself (no upward imports);
* no import cycles between modules, counting imports inside functions too (a deferred import only
  hides a cycle from the interpreter, not from a reader).
"""

import ast
from pathlib import Path

import pytest

from gan_jax import models

PACKAGE = Path(__file__).resolve().parent.parent / 'gan_jax'

# Cycles that exist on purpose for now, each a frozenset of module names.
KNOWN_CYCLES: set[frozenset] = set()

# The layers of training, lowest first: a module may import its own layer and the ones below.
# The loop (gan_jax.train) imports the steps, models, data and metrics; they never import it, and
# only the entry points import the loop.
ENTRY_POINTS = {'gan_jax.main', 'gan_jax.aot'}
STEP_MODULES = {'gan_jax.steps', 'gan_jax.train_step', 'gan_jax.stylegan2_phases',
                'gan_jax.progressive_step', 'gan_jax.progressive_phases', 'gan_jax.step_common'}


def _module_name(path: Path) -> str:
  parts = path.relative_to(PACKAGE.parent).with_suffix('').parts
  return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def _sources() -> dict[str, ast.Module]:
  return {_module_name(p): ast.parse(p.read_text(), str(p)) for p in sorted(PACKAGE.rglob('*.py'))}


def _is_package(name: str, known: set[str]) -> bool:
  return any(m.startswith(name + '.') for m in known)


def _resolve_from(module: str, node: ast.ImportFrom, known: set[str]) -> str:
  """The absolute module an ImportFrom reads from (relative imports resolved)."""
  if not node.level:
    return node.module or ''
  base = module.split('.')
  if not _is_package(module, known):  # a plain module: level 1 is its package
    base = base[:-1]
  base = base[:len(base) - (node.level - 1)]
  return '.'.join(base + ([node.module] if node.module else []))


def imports_of(module: str, tree: ast.Module, known: set[str]) -> dict[str, str]:
  """{local name: what it names} for every import in `tree` (any depth): a module
  ('gan_jax.models.progan') or a module's attribute ('gan_jax.models.layers.lerp')."""
  names = {}
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for alias in node.names:
        if alias.asname:
          names[alias.asname] = alias.name
        else:
          names[alias.name.split('.')[0]] = alias.name.split('.')[0]
          names[alias.name] = alias.name
    elif isinstance(node, ast.ImportFrom):
      source = _resolve_from(module, node, known)
      for alias in node.names:
        target = f'{source}.{alias.name}'
        names[alias.asname or alias.name] = target
  return names


def module_deps(module: str, tree: ast.Module, known: set[str]) -> set[str]:
  """The gan_jax modules `module` imports (at any depth; a name imported from a module counts
  as that module, a submodule imported from a package as the submodule)."""
  deps = set()
  for target in imports_of(module, tree, known).values():
    while target and target not in known:
      target = target.rpartition('.')[0]
    if target and target != module:
      deps.add(target)
  return deps


def family_class_uses(module: str, tree: ast.Module, known: set[str],
                      family_classes: dict[str, set[str]]) -> list[str]:
  """`isinstance`/`issubclass` calls of `tree` whose class (or one in a tuple of classes) is a
  class of a family module ({module: class names}): 'line N: source'."""
  names = imports_of(module, tree, known)

  def target(node) -> str:
    if isinstance(node, ast.Name):
      return names.get(node.id, '')
    if isinstance(node, ast.Attribute):
      base = target(node.value)
      return f'{base}.{node.attr}' if base else ''
    return ''

  found = []
  for node in ast.walk(tree):
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and
            node.func.id in ('isinstance', 'issubclass') and len(node.args) == 2):
      continue
    classes = node.args[1].elts if isinstance(node.args[1], ast.Tuple) else [node.args[1]]
    for cls in classes:
      owner, _, name = target(cls).rpartition('.')
      if name in family_classes.get(owner, ()):
        found.append(f'line {node.lineno}: {ast.unparse(node)}')
  return found


def find_cycles(graph: dict[str, set[str]]) -> list[frozenset]:
  """The strongly connected components of more than one module (Tarjan)."""
  index, low, stack, on_stack, cycles = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in sorted(graph.get(v, ())):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = set()
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.add(w)
        if w == v:
          break
      if len(component) > 1:
        cycles.append(frozenset(component))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return cycles


@pytest.fixture(scope='module')
def package():
  sources = _sources()
  known = set(sources)
  graph = {m: module_deps(m, tree, known) for m, tree in sources.items()}
  family_modules = {f.generator.__module__ for f in models.FAMILIES.values()}
  family_modules |= {f.discriminator.__module__ for f in models.FAMILIES.values()}
  family_classes = {m: {n.name for n in ast.walk(sources[m]) if isinstance(n, ast.ClassDef)}
                    for m in family_modules}
  return sources, known, graph, family_classes


def test_the_graph_is_read(package):
  sources, _, graph, family_classes = package
  assert {'gan_jax.train', 'gan_jax.models', 'gan_jax.models.layers'} <= set(sources)
  assert 'gan_jax.models.layers' in graph['gan_jax.models.progan']
  assert 'gan_jax.models' in graph['gan_jax.tools.export']  # `from gan_jax import models`
  assert {'gan_jax.steps', 'gan_jax.schedule'} <= graph['gan_jax.train']
  assert 'gan_jax.train_step' in graph['gan_jax.steps']
  assert {'Generator', 'Discriminator'} <= family_classes['gan_jax.models.progan']


def test_no_family_isinstance_outside_models(package):
  sources, known, _, family_classes = package
  offenders = {m: family_class_uses(m, tree, known, family_classes)
               for m, tree in sources.items() if not m.startswith('gan_jax.models')}
  offenders = {m: uses for m, uses in offenders.items() if uses}
  assert not offenders, f'ask gan_jax.models.family_of(module) instead: {offenders}'


@pytest.mark.parametrize('source', [
    'from gan_jax.models import progan\nisinstance(G, progan.Generator)',
    'from gan_jax.models import stylegan as s\nissubclass(T, (int, s.Discriminator))',
    'from gan_jax.models.stylegan2 import Generator\nisinstance(G, Generator)',
    'import gan_jax.models.progan\nisinstance(G, gan_jax.models.progan.Generator)',
    'from gan_jax import models\nisinstance(G, models.stylegan2.Generator)',
])
def test_the_isinstance_check_sees_the_usual_spellings(package, source):
  _, known, _, family_classes = package
  assert family_class_uses('gan_jax.x', ast.parse(source), known, family_classes)


def test_models_import_nothing_above_them(package):
  _, _, graph, _ = package
  upward = {m: sorted(d for d in deps if not d.startswith('gan_jax.models'))
            for m, deps in graph.items() if m.startswith('gan_jax.models')}
  assert not {m: d for m, d in upward.items() if d}


def test_only_entry_points_import_the_loop(package):
  _, _, graph, _ = package
  importers = {m for m, deps in graph.items() if 'gan_jax.train' in deps}
  assert importers <= ENTRY_POINTS, f'the loop is imported by {sorted(importers - ENTRY_POINTS)}'


def test_steps_import_no_loop_metrics_or_tools(package):
  _, _, graph, _ = package
  upward = {m: sorted(d for d in graph[m] if d in ENTRY_POINTS | {'gan_jax.train'}
                      or d.startswith(('gan_jax.metrics', 'gan_jax.tools', 'gan_jax.data')))
            for m in STEP_MODULES}
  assert not {m: d for m, d in upward.items() if d}
  # the step modules do not know the registry either, only the other way round
  assert not {m for m in STEP_MODULES - {'gan_jax.steps'} if 'gan_jax.steps' in graph[m]}


def test_no_import_cycles_but_the_known_ones(package):
  _, _, graph, _ = package
  cycles = set(find_cycles(graph))
  assert cycles - KNOWN_CYCLES == set(), 'new import cycles'
  assert KNOWN_CYCLES - cycles == set(), 'a known cycle is gone: delete it from KNOWN_CYCLES'


def test_the_cycle_finder():
  graph = {'a': {'b'}, 'b': {'c'}, 'c': {'a', 'd'}, 'd': set(), 'e': {'e'}}
  assert find_cycles(graph) == [frozenset('abc')]
