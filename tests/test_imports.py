"""The package's import graph: no module imports itself back through others."""

import ast
import os

import gptjax

PACKAGE = os.path.dirname(gptjax.__file__)


def _module_name(path: str) -> str:
  relative = os.path.relpath(path, os.path.dirname(PACKAGE))[:-3].replace(os.sep, '.')
  return relative.removesuffix('.__init__')


def import_graph() -> dict[str, set[str]]:
  """Every gptjax module -> the gptjax modules it imports (at any depth of its code)."""
  modules = {}
  for directory, _, files in os.walk(PACKAGE):
    for file in files:
      if file.endswith('.py'):
        path = os.path.join(directory, file)
        modules[_module_name(path)] = path
  graph = {}
  for name, path in modules.items():
    with open(path) as f:
      tree = ast.parse(f.read())
    imported = set()
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        imported |= {alias.name for alias in node.names}
      elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        # `from gptjax.models import gpt` imports the module gptjax.models.gpt.
        imported |= {
          f'{node.module}.{alias.name}' if f'{node.module}.{alias.name}' in modules else node.module
          for alias in node.names
        }
    graph[name] = {m for m in imported if m in modules and m != name}
  return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
  state = {}  # 1 on the current path, 2 done

  def visit(node, path):
    state[node] = 1
    for nxt in sorted(graph[node]):
      if state.get(nxt) == 1:
        return path[path.index(nxt) :] + [node, nxt] if nxt in path else [node, nxt]
      if nxt not in state:
        found = visit(nxt, path + [node])
        if found:
          return found
    state[node] = 2
    return None

  for node in sorted(graph):
    if node not in state:
      found = visit(node, [])
      if found:
        return found
  return None


def test_the_package_has_no_import_cycle():
  assert find_cycle(import_graph()) is None, ' -> '.join(find_cycle(import_graph()))


def test_the_cycle_finder_finds_a_cycle():
  assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': set()}) is not None
  assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': set()}) is None
