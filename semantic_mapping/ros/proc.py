"""Start ROS processes (the node, the replay driver) from plain Python, e.g. from pytest or the benchmark.

No ROS import: the child sources the colcon install (install_ros/setup.bash) in a clean environment
and runs the .ros_venv interpreter, with this checkout first on PYTHONPATH so that the working tree
is what runs (the install still provides the generated semantic_mapping.msg/srv).
"""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path
from typing import Optional


def repo_root() -> Path:
    env = os.environ.get("SEMANTIC_MAPPING_ROOT")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2]


def install_base() -> Path:
    return Path(os.environ.get("SEMANTIC_MAPPING_INSTALL", repo_root() / "install_ros"))


def ros_python() -> Path:
    return Path(os.environ.get("ROS_VENV", repo_root() / ".ros_venv")) / "bin" / "python"


def ros_available() -> bool:
    """True when the colcon install and the ROS venv exist (scripts/build_ros.sh ran)."""
    return (install_base() / "setup.bash").exists() and ros_python().exists()


def ros_env(domain_id: int, log_dir: Path, extra: Optional[dict] = None) -> dict:
    env = {
        "HOME": os.environ.get("HOME", str(log_dir)),
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "ROS_LOG_DIR": str(log_dir),
        "ROS_DOMAIN_ID": str(int(domain_id)),
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "RCUTILS_LOGGING_BUFFERED_STREAM": "0",
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        "SEMANTIC_MAPPING_ROOT": str(repo_root()),
        # reliable writers repair a lost sample within ~0.2 s instead of Fast DDS's 3 s heartbeat
        "FASTDDS_DEFAULT_PROFILES_FILE": str(repo_root() / "config" / "fastdds_profile.xml"),
    }
    env.update(extra or {})
    return env


def ros_command(module: str, args: list) -> list:
    """bash command line running `python -m module args` inside the sourced ROS install."""
    script = (
        f"set -e\nsource {shlex.quote(str(install_base() / 'setup.bash'))}\n"
        f"export PYTHONPATH={shlex.quote(str(repo_root()))}${{PYTHONPATH:+:$PYTHONPATH}}\n"
        f"exec {shlex.quote(str(ros_python()))} -m {module} \"$@\"\n"
    )
    return ["bash", "-c", script, "_", *[str(a) for a in args]]


def start(module: str, args: list, domain_id: int, cwd: Path, log_name: str, extra_env: Optional[dict] = None):
    """Popen of a ROS Python module, stdout+stderr into cwd/<log_name>.log; cwd must be outside the repo."""
    cwd = Path(cwd)
    cwd.mkdir(parents=True, exist_ok=True)
    log = open(cwd / f"{log_name}.log", "w")
    return subprocess.Popen(
        ros_command(module, args), cwd=cwd, env=ros_env(domain_id, cwd / "ros_log", extra_env),
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )


def node_args(params: dict, remaps: Optional[dict] = None) -> list:
    """--ros-args list for the mapping node from {parameter: value} and {from: to} remappings."""
    out = ["--ros-args"]
    for name, value in params.items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, (list, tuple)):
            value = "[" + ",".join(str(v) for v in value) + "]"
        out += ["-p", f"{name}:={value}"]
    for src, dst in (remaps or {}).items():
        out += ["-r", f"{src}:={dst}"]
    return out


def stop(process: subprocess.Popen, timeout_s: float = 10.0) -> Optional[int]:
    """SIGINT the process (its own session), then SIGKILL if it does not end; its exit code."""
    import signal

    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGINT)
            process.wait(timeout=timeout_s)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait(timeout=timeout_s)
    return process.returncode
