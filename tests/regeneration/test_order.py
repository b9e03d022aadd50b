"""The order of ``regenerate --all``: derived from the calls in the code, cycles grouped, the registry breaking ties."""

from __future__ import annotations

from pathlib import Path

from regeneration.order import called_addresses, dependencies, dependency_order

ROOT = Path(__file__).resolve().parents[2]
CONSTANTS = {"TURING": "turing", "MCNAMARA": "mcnamara", "HORACE": "horace"}


def test_calls_are_read_directly_and_through_module_level_aliases() -> None:
    source = (
        "from mads.core import names\nAUDIT = names.MCNAMARA\n\n"
        "async def f(self):\n"
        "    await self.call(names.TURING, 'get', {})\n"
        "    await self.call(AUDIT, 'record', {})\n"
        "    self.note(names.HORACE)\n"  # not a call to Horace
    )
    assert called_addresses(source, CONSTANTS) == {"turing", "mcnamara"}


def test_a_mad_comes_after_what_it_calls_and_a_cycle_keeps_the_registry_order() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"b"}, "d": set(), "e": {"a"}}
    assert dependency_order(graph) == ["b", "c", "a", "d", "e"]
    assert dependency_order({"x": set(), "y": {"x"}, "z": set()}) == ["x", "y", "z"]


def test_the_ecosystem_order_puts_the_services_first() -> None:
    graph = dependencies(ROOT)
    order = dependency_order(graph)
    assert sorted(order) == sorted(graph)
    # Hopper calls Horace; Fiedler reads keys from Turing; McNamara audits: each comes after what it calls,
    # except inside a cycle.
    assert graph["hopper"] >= {"horace"} and graph["fiedler"] >= {"turing"}
    assert order.index("horace") < order.index("hopper")
    # The runtime's Imperator calls Fiedler and Rogers: every MAD depends on them.
    assert all({"fiedler", "rogers"} - {mad} <= graph[mad] for mad in graph)
    services = {"rogers", "mcnamara", "turing", "fiedler"}
    assert set(order[:4]) == services
    for mad, needs in graph.items():
        for dependency in needs:
            cyclic = mad in graph[dependency] or {mad, dependency} <= services
            assert cyclic or order.index(dependency) < order.index(mad), (mad, dependency)
