"""The benchmark's node figures: skipped with one clear line without ROS, never importing rclpy here."""

from __future__ import annotations

import sys

from semantic_mapping.eval import bench


def test_node_figures_are_skipped_with_a_clear_line_without_ros(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("SEMANTIC_MAPPING_INSTALL", str(tmp_path / "no_install"))
    assert bench.node_figures(quick=True) == []
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "node figures skipped" in out[0] and "scripts/build_ros.sh" in out[0]
    assert "rclpy" not in sys.modules


def test_node_figures_come_from_node_bench_records(monkeypatch):
    from semantic_mapping.ros import node_bench, proc

    detail = {"seed": 1001, "frames": 30, "integrated": 29, "width_px": 640, "rate_hz": 10.0, "voxel_size_m": 0.04,
              "drops": {}, "memory_mb": 500.0, "node_alive_at_end": True, "work_dir": "/tmp/x",
              "fastdds_transports": "default", "reliable_inputs": True}
    fake = {"node.drop_rate": 1 / 30, "node.latency_ms_p50": 120.0, "node.latency_ms_p95": 300.0, "detail": detail}
    monkeypatch.setattr(proc, "ros_available", lambda: True)
    monkeypatch.setattr(node_bench, "run_node_benchmark", lambda **kw: fake)
    figures = bench.node_figures(quick=True)
    assert [f.name for f in figures] == ["node.drop_rate", "node.latency_ms_p50", "node.latency_ms_p95"]
    assert figures[1].value == 120.0 and figures[0].seeds == [1001]
    table = bench.format_table(figures)
    assert "29 of 30 frames integrated" in table

    def failing(**kw):
        raise RuntimeError("node benchmark replay failed:\nboom")

    monkeypatch.setattr(node_bench, "run_node_benchmark", failing)
    assert bench.node_figures() == []


def test_bench_runs_development_seeds_only_when_asked(capsys):
    from semantic_mapping.cli import main

    assert main(["bench", "--only", "objects", "--seeds", "1001"]) == 2
    assert "not development seeds" in capsys.readouterr().err
    assert main(["bench", "--only", "objects", "--seeds", "998-1001"]) == 2  # a range reaching into the held-out seeds
    assert "[1000, 1001] are not development seeds" in capsys.readouterr().err
    assert main(["bench", "--only", "objects", "--seeds", "two"]) == 2
    assert "expected seeds such as '20-31,40', got 'two'" in capsys.readouterr().err


def test_parse_seeds_reads_lists_and_ranges():
    from semantic_mapping.sim.sequence import parse_seeds

    assert parse_seeds("200-202, 5") == [200, 201, 202, 5]
    assert parse_seeds("7") == [7]
