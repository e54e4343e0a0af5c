"""A bag from the synthetic-scene writer, replayed into the mapping node, gives the map `semantic-mapping run BAG` gives.

The node runs as its own process (as in test_ros_node.py) with use_sim_time:=true;
semantic_mapping.ros.bag_player plays the bag into it twice (--loops 2, /clock from the bag, reliable
QoS, a quarter of the recorded speed). The second loop's stamps jump back in time, so the node
resets the map (node.on_time_jump=reset) and maps the replay again. semantic_mapping.ros.map_client
then waits until the node reports every frame of the replay integrated and calls its save_map
service. The saved map is loaded with the library and compared with the map of the same bag mapped
without ROS. Needs the colcon build (scripts/build_ros.sh): skipped without it, failed in CI.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from semantic_mapping.ros import proc
from test_ros_node import _require_ros, domain_id

FRAMES = 10
VOXEL_SIZE_M = 0.04
# Reliable inputs and room for every frame: the bag is replayed slowly and nothing may be dropped.
# max_wait_s: a frame's ~4 MB of messages can take over half a second to cross loopback on a loaded
# 2-core machine. time_jump_back_s: the bag spans 0.3 s, so its replay jumps back by 0.3 s.
# A pause between the loops, as a person replaying a bag twice makes: the first loop's last messages
# are in before the second begins (lost samples are repaired within ~0.2 s with the heartbeat of
# config/fastdds_profile.xml, which proc.ros_env sets), and the streams still count as active.
LOOP_GAP_S = 1.0
NODE_PARAMS = {"fusion.voxel_size_m": VOXEL_SIZE_M, "fusion.device": "cpu", "node.reliable_inputs": True,
               "node.queue_size": 2 * FRAMES, "node.status_rate_hz": 4.0, "assembly.max_wait_s": 5.0,
               "assembly.time_jump_back_s": 0.1, "use_sim_time": True}


@pytest.fixture(scope="module")
def bag_and_reference(tmp_path_factory):
    """(bag path, the library's map of it: Mapper) from `generate` and `run` (no ROS)."""
    from semantic_mapping.cli import main

    if not proc.ros_available():
        pytest.skip("install_ros/ not built")  # _require_ros in the test fails instead under CI
    root = tmp_path_factory.mktemp("bag_replay")
    assert main(["generate", "--seed", "5", "--out", str(root / "gen"), "--frames", str(FRAMES)]) == 0
    bag = root / "gen" / "bag"
    assert main(["run", str(bag), "--out", str(root / "ref"), "--voxel-size", str(VOXEL_SIZE_M), "--device", "cpu"]) == 0
    return bag, _load(root / "ref" / "map.npz")


def _load(path: Path):
    """A saved map, its labels read from each voxel's stored distribution (the map's content: the surface
    context, a read-out of those distributions, spreads their differences near ties to neighbours)."""
    from semantic_mapping.config import load_config
    from semantic_mapping.pipeline import Mapper

    mapper = Mapper(load_config(None, {"fusion": {"voxel_size_m": VOXEL_SIZE_M, "device": "cpu"},
                                       "semantics": {"context_iterations": 0}}))
    mapper.load(path)
    return mapper


def _replay(tmp_path: Path, domain: int, bag: Path, loops: int, on_time_jump: str = "reset") -> dict:
    """Play the bag `loops` times into a fresh node, wait until FRAMES frames are integrated, save."""
    ros = lambda module, args, timeout: subprocess.run(  # noqa: E731
        proc.ros_command(module, args), cwd=tmp_path, env=proc.ros_env(domain, tmp_path / "ros_log"),
        capture_output=True, text=True, timeout=timeout)
    params = {**NODE_PARAMS, "node.on_time_jump": on_time_jump}
    node = proc.start("semantic_mapping.ros.mapping_node", proc.node_args(params), domain, tmp_path, "node")
    saved = tmp_path / "node_map.npz"
    t0 = time.monotonic()
    try:
        player = ros("semantic_mapping.ros.bag_player",
                     [bag, "--rate", 0.25, "--reliable", "--clock", "--wait-subscribers", 30, "--settle", 2,
                      "--prime-camera-info", "--loops", loops, "--loop-gap", LOOP_GAP_S], 90)
        client = ros("semantic_mapping.ros.map_client",
                     ["--wait-frames", FRAMES, "--timeout", 40, "--save", saved], 90)
        alive = node.poll() is None
    finally:
        code = proc.stop(node)
    log = (tmp_path / "node.log").read_text()
    context = f"player:\n{player.stdout}{player.stderr[-2000:]}\nclient:\n{client.stdout}{client.stderr[-2000:]}\nnode:\n{log[-3000:]}"
    assert player.returncode == 0, context
    assert alive and code == 0, f"node died or exited with {code}\n{context}"
    played = json.loads(player.stdout.strip().splitlines()[-1])
    result = json.loads(client.stdout.strip().splitlines()[-1])
    print(json.dumps({"played": played["messages"], "status": result["status"]}), f"wall {time.monotonic() - t0:.1f} s")
    assert played["without_subscriber"] == [] and played["per_topic"]["/rgb/image"] == loops * FRAMES, context
    assert result["ok"] and result["save"]["success"], context
    return {"map": _load(saved), "status": result["status"], "log": log, "context": context}


def _compare(node_mapper, reference) -> dict:
    n_node, n_ref = node_mapper.map.num_voxels, reference.map.num_voxels
    a, b = node_mapper.labelled_voxels(), reference.labelled_voxels()
    key = lambda v: {tuple(k): int(lbl) for k, lbl in  # noqa: E731
                     zip(np.round(v.positions_m / VOXEL_SIZE_M).astype(np.int64).tolist(), v.labels)}
    ka, kb = key(a), key(b)
    common = ka.keys() & kb.keys()
    agree = sum(ka[k] == kb[k] for k in common)
    return {"voxels_node": n_node, "voxels_ref": n_ref, "voxel_ratio": n_node / max(n_ref, 1),
            "surface_node": len(ka), "surface_ref": len(kb), "common": len(common),
            "label_agreement": agree / max(len(common), 1)}


def _assert_same_map(node_mapper, reference, context: str) -> None:
    c = _compare(node_mapper, reference)
    print(json.dumps(c))
    assert c["voxels_ref"] > 1000, c
    assert abs(c["voxel_ratio"] - 1.0) <= 0.01, f"{c}\n{context}"
    assert c["common"] >= 0.95 * min(c["surface_node"], c["surface_ref"]), f"{c}\n{context}"
    assert c["label_agreement"] >= 0.98, f"{c}\n{context}"


@pytest.mark.slow
def test_bag_replayed_twice_on_sim_time_resets_and_gives_the_offline_map(tmp_path, bag_and_reference):
    _require_ros()
    bag, reference = bag_and_reference
    r = _replay(tmp_path, domain_id(11), bag, loops=2, on_time_jump="reset")
    # the replay's jump back in time reset the map once (whichever stream saw it first), and the
    # counters restarted: the map holds exactly the second loop's frames
    assert r["log"].count("jumped back in time") == 1, r["context"]
    assert r["status"]["frames_integrated"] == FRAMES, r["context"]
    # the node runs on the bag's clock (its stamps start at 1 s), not on wall time
    assert 1.0 <= r["status"]["stamp_s"] <= 1.0 + FRAMES / 30 + 1.0, r["context"]
    # on sim time the latency runs from receipt (stamps and clock both come from the bag)
    assert 0 < r["status"]["latency_ms_p50"] <= r["status"]["latency_ms_p95"] < 5000, r["context"]
    _assert_same_map(r["map"], reference, r["context"])


@pytest.mark.slow
def test_a_replay_jumping_back_is_refused_when_asked_and_the_map_kept(tmp_path, bag_and_reference):
    _require_ros()
    bag, reference = bag_and_reference
    r = _replay(tmp_path, domain_id(12), bag, loops=2, on_time_jump="refuse")
    assert "resetting the map" not in r["log"] and "refusing" in r["log"], r["context"]
    # every colour image of the replay refused: as a jump back, or (within time_jump_back_s of the
    # first run's newest stamp) as out of order
    drops = r["status"]["drops"]
    assert drops.get("time_jump_back", 0) + drops.get("stamp_out_of_order", 0) == FRAMES, r["context"]
    assert r["status"]["frames_integrated"] == FRAMES, r["context"]  # the first run's frames, kept
    _assert_same_map(r["map"], reference, r["context"])
