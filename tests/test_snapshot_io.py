from pathlib import Path

from nvme_agent.topology.capture import parse_export_db
from nvme_agent.topology.snapshot_io import snapshot_from_dict
from nvme_agent.topology.tracker import Topology, diff_snapshots

FIXTURES = Path(__file__).parent / "fixtures" / "captures"


def test_state_file_round_trip_loses_nothing_the_diff_uses() -> None:
    text = (FIXTURES / "multipath" / "state-13-udev-export-db.txt").read_text()
    topo = Topology()
    topo.apply_all(parse_export_db(text))
    snap = topo.snapshot()
    assert len(snap.namespaces) == 4
    again = snapshot_from_dict(snap.to_dict())
    assert again.to_dict() == snap.to_dict()
    assert diff_snapshots(again, snap) == []
