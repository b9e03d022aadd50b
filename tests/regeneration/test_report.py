"""The architectural report: real git, the real source tree, tool schemas read in the real sandbox."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from regeneration.confinement import Confinement
from regeneration.gitrepo import git
from regeneration.report import build_report, imports_of, schema_diff

pytestmark = pytest.mark.slow

FUTURE = "from __future__ import annotations\n"


async def _change(repo: Path, files: dict[str, str], message: str = "change") -> None:
    def write() -> None:
        for path, content in files.items():
            (repo / path).parent.mkdir(parents=True, exist_ok=True)
            (repo / path).write_text(content)

    await asyncio.to_thread(write)
    await git(repo, "add", "-A")
    await git(repo, "commit", "-q", "-m", message)


async def _read(repo: Path, path: str) -> str:
    return await asyncio.to_thread((repo / path).read_text)


async def test_a_clean_change_lists_files_imports_and_the_tool_schema_diff(
    ecosystem_source: Path, confinement: Confinement
) -> None:
    schemas = await _read(ecosystem_source, "mads/mcnamara/schemas.py")
    mad = await _read(ecosystem_source, "mads/mcnamara/mad.py")
    new_tool = (
        '    @tool("Whether McNamara is listening.")\n'
        "    async def ping(self, args: NoArgs) -> str:\n"
        "        return str(math.pi)\n\n"
        '    @tool("IP addresses currently blocked, with until when and why.")\n'
    )
    await _change(
        ecosystem_source,
        {
            "mads/mcnamara/schemas.py": schemas.replace("le=1000)", "le=500)"),
            "mads/mcnamara/mad.py": mad.replace("import asyncio\n", "import asyncio\nimport math\n", 1).replace(
                '    @tool("IP addresses currently blocked, with until when and why.")\n', new_tool, 1
            ),
            "requirements/mcnamara.md": (await _read(ecosystem_source, "requirements/mcnamara.md")) + "\nping.\n",
        },
    )

    report = await build_report(ecosystem_source, "HEAD~1", "mcnamara", confinement)

    assert sorted((f.status, f.path) for f in report.files) == [
        ("M", "mads/mcnamara/mad.py"),
        ("M", "mads/mcnamara/schemas.py"),
        ("M", "requirements/mcnamara.md"),
    ]
    assert report.imports_added == {"mads/mcnamara/mad.py": ["math"]}
    assert report.violations == []
    assert not report.refused
    assert report.schema_error is None
    assert report.tools.added == ["ping"]
    assert report.tools.removed == []
    assert list(report.tools.changed) == ["tail"]
    [change] = report.tools.changed["tail"]
    assert change.pointer == "/inputSchema/properties/n/maximum"
    assert (change.before, change.after, change.kind) == (1000, 500, "changed")


async def test_a_mad_importing_another_mad_is_refused(ecosystem_source: Path, confinement: Confinement) -> None:
    mad = await _read(ecosystem_source, "mads/mcnamara/mad.py")
    await _change(
        ecosystem_source,
        {
            "mads/mcnamara/mad.py": mad.replace(
                "import asyncio\n", "import asyncio\n\nfrom mads.rogers import store\n", 1
            )
        },
    )
    report = await build_report(ecosystem_source, "HEAD~1", "mcnamara", confinement)
    assert report.refused
    assert [(v.rule, v.path) for v in report.violations] == [("mad_imports_mad", "mads/mcnamara/mad.py")]
    assert "mads.rogers" in report.violations[0].detail


async def test_infrastructure_importing_a_mad_and_undeclared_files_are_refused(
    ecosystem_source: Path, confinement: Confinement
) -> None:
    memory = await _read(ecosystem_source, "bus/memory.py")
    await _change(
        ecosystem_source,
        {
            "bus/memory.py": memory.replace(FUTURE, FUTURE + "\nimport mads.mcnamara.store  # noqa\n", 1),
            "requirements/rogers.md": "rewritten\n",
        },
    )
    report = await build_report(ecosystem_source, "HEAD~1", "mcnamara", confinement)
    assert sorted((v.rule, v.path) for v in report.violations) == [
        ("infrastructure_imports_mad", "bus/memory.py"),
        ("undeclared_file", "bus/memory.py"),
        ("undeclared_file", "requirements/rogers.md"),
    ]

    # Declaring the files lifts that rule only: infrastructure still may not import a MAD.
    declared = await build_report(
        ecosystem_source, "HEAD~1", "mcnamara", confinement, declared=["requirements/rogers.md", "bus/memory.py"]
    )
    assert [(v.rule, v.path) for v in declared.violations] == [("infrastructure_imports_mad", "bus/memory.py")]


async def test_the_mad_class_is_imported_only_in_the_sandbox(ecosystem_source: Path, confinement: Confinement) -> None:
    """Module-level code of the change runs when its schemas are read: confined, it can do no harm."""
    outside = Path("/var/tmp") / f"report-escape-{uuid.uuid4().hex}"
    mad = await _read(ecosystem_source, "mads/mcnamara/mad.py")
    hostile = f"import asyncio\nopen({str(outside)!r}, 'w').write('escaped')\n"
    await _change(ecosystem_source, {"mads/mcnamara/mad.py": mad.replace("import asyncio\n", hostile, 1)})

    report = await build_report(ecosystem_source, "HEAD~1", "mcnamara", confinement)

    assert report.schema_error is not None
    assert "could not be described" in report.schema_error
    assert not await asyncio.to_thread(outside.exists)


def test_relative_imports_are_resolved() -> None:
    source = "from . import store\nfrom ..rogers import mad\nfrom .schemas import X\n"
    assert imports_of(source, "mads.mcnamara.mad", is_package=False) == {
        "mads.mcnamara",
        "mads.mcnamara.store",
        "mads.rogers",
        "mads.rogers.mad",
        "mads.mcnamara.schemas",
        "mads.mcnamara.schemas.X",
    }


def test_schema_diff_names_each_difference_by_json_pointer() -> None:
    before = {"properties": {"a": {"type": "string"}, "b/c": {"type": "integer"}}, "required": ["a"]}
    after = {"properties": {"a": {"type": "integer"}, "d": {"type": "string"}}, "required": ["a"]}
    assert [(c.pointer, c.kind) for c in schema_diff(before, after)] == [
        ("/properties/a/type", "changed"),
        ("/properties/b~1c", "removed"),
        ("/properties/d", "added"),
    ]


async def test_the_arbiter_and_the_governance_are_protected_even_when_declared(
    ecosystem_source: Path, confinement: Confinement
) -> None:
    touched = {
        "tests/test_codebase.py": "def test_nothing() -> None:\n    pass\n",
        "tests/conftest.py": "",
        "sitecustomize.py": "import os\n",
        "principles/security.md": "nothing\n",
        "regeneration/confinement.py": "",
        "tests/mads/rogers/test_x.py": "",
    }
    await _change(ecosystem_source, touched)
    report = await build_report(ecosystem_source, "HEAD~1", "mcnamara", confinement, declared=list(touched))
    assert sorted((v.rule, v.path) for v in report.violations) == [
        ("protected_file", "principles/security.md"),
        ("protected_file", "regeneration/confinement.py"),
        ("protected_file", "sitecustomize.py"),
        ("protected_file", "tests/conftest.py"),
        ("protected_file", "tests/test_codebase.py"),
    ]
