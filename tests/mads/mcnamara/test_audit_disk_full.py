"""The audit trail on a real full disk: no silent gap.

McNamara's directory is a small tmpfs (or loop-mounted file) the test mounts and fills. A
must-audit action fails closed; events that cannot be written are counted, and the first
record written once space is back is preceded by an ``audit.gap`` record that ``verify`` and
``ecosystem.py audit verify`` report.
"""

from __future__ import annotations

from pathlib import Path

from bus.memory import InMemoryBus
from bus.topics import MAD_LIFECYCLE
from mads.core import names
from tests.mads.admin.test_audit_cli import DENIAL
from tests.mads.mcnamara.conftest import Harness
from tests.support.cli import run_cli as cli
from tests.support.small_disk import small_filesystem

LOST = 5


async def test_records_lost_on_a_full_disk_leave_a_reported_gap(bus: InMemoryBus, tmp_path: Path) -> None:
    data = tmp_path / "data"
    with small_filesystem(data / names.MCNAMARA, size_mb=4) as disk:
        harness = Harness(bus, data)
        await harness.start()
        try:
            await harness.result("record", DENIAL, sender="turing")
            disk.fill()

            refused = await harness.call("record", DENIAL, sender="turing")
            assert refused.error is not None and refused.error.code == "audit_unavailable"
            for i in range(LOST):
                await harness.publish(MAD_LIFECYCLE, {"state": f"lost-{i}"})
            await harness.fence()
            assert harness.m.trail.lost == LOST + 1
            (store,) = (await harness.result("storage", sender="gateway"))["stores"]  # type: ignore[index]
            assert (store["store"], store["writable"], store["refused"]) == ("mcnamara/audit.db", False, LOST + 1)
            assert "disk_full" in store["last_error"]

            disk.free()
            await harness.result("record", DENIAL, sender="turing")
            assert harness.m.health.health.writable
            report = await harness.m.trail.verify()
            assert report.ok
            (gap,) = report.gaps
            assert gap.lost == LOST + 1
            assert gap.event_types == {"mad.lifecycle": LOST, "secret.denied": 1}
        finally:
            await harness.stop()

        code, out, err = await cli("audit", "verify", "--data-dir", str(data))
        assert code == 1, out + err
        assert f"{LOST + 1} records lost" in err and "mad.lifecycle x5" in err
