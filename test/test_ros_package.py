"""The ROS 2 package around the library: package.xml, CMakeLists.txt, msg/, srv/ and the colcon build.

The structural tests run without ROS. `test_built_interfaces_*` needs the colcon build made by
scripts/build_ros.sh (install_ros/): without it they skip on a developer machine and fail in CI (the
environment variable CI is set), where the build script runs before the tests.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_XML = ROOT / "package.xml"
CMAKE_LISTS = ROOT / "CMakeLists.txt"
ROS_SOURCES = ROOT / "semantic_mapping" / "ros"
INSTALL_BASE = ROOT / "install_ros"
ROS_VENV = Path(os.environ.get("ROS_VENV", ROOT / ".ros_venv"))

PRIMITIVE_TYPES = {
    "bool", "byte", "char",
    "float32", "float64",
    "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64",
    "string", "wstring",
}
# Top-level Python modules that come from ROS packages (the Python module is named as the package).
ROS_MODULE_RE = re.compile(
    r"^(rclpy|rcl_\w+|\w+_msgs|\w+_srvs|\w+_interfaces|tf2(_\w+)?|launch(_\w+)?|message_filters"
    r"|ament_index_python|rosidl_\w+|cv_bridge|rosbag2_py|rpyutils|rviz\w*)$"
)
IMPORT_RE = re.compile(r"^\s*(?:from\s+([A-Za-z_]\w*)[\w.]*\s+import\b|import\s+(.+))", re.MULTILINE)


# ------------------------------------------------------------------------------------------------
# helpers


def _package_xml() -> ET.Element:
    return ET.parse(PACKAGE_XML).getroot()


def _deps(root: ET.Element, *tags: str) -> set[str]:
    return {(e.text or "").strip() for tag in tags for e in root.findall(tag)}


def _run_deps(root: ET.Element) -> set[str]:
    return _deps(root, "depend", "exec_depend")


def _build_deps(root: ET.Element) -> set[str]:
    return _deps(root, "depend", "build_depend", "buildtool_depend")


def _cmake_text() -> str:
    # Drop comments so that commented-out lines do not count.
    return re.sub(r"#[^\n]*", "", CMAKE_LISTS.read_text())


def _rosidl_call() -> tuple[list[str], list[str]]:
    """(interface files, DEPENDENCIES) of the rosidl_generate_interfaces call in CMakeLists.txt."""
    m = re.search(r"rosidl_generate_interfaces\s*\(([^)]*)\)", _cmake_text())
    assert m, "CMakeLists.txt has no rosidl_generate_interfaces(...) call"
    tokens = [t.strip('"') for t in m.group(1).split()]
    files = [t for t in tokens if re.search(r"\.(msg|srv|action)$", t)]
    deps: list[str] = []
    if "DEPENDENCIES" in tokens:
        for t in tokens[tokens.index("DEPENDENCIES") + 1 :]:
            if t.isupper():  # next keyword (ADD_LINTER_TESTS, LIBRARY_NAME, ...)
                break
            deps.append(t)
    return files, deps


def _interface_files() -> list[Path]:
    return sorted([*ROOT.glob("msg/*.msg"), *ROOT.glob("srv/*.srv"), *ROOT.glob("action/*.action")])


def _field_lines(path: Path) -> list[tuple[int, str, str]]:
    """(line number, code, comment) for each non-empty, non-comment line; '---' separators kept."""
    out = []
    for no, line in enumerate(path.read_text().splitlines(), 1):
        code, _, comment = line.partition("#")
        if code.strip():
            out.append((no, code.strip(), comment.strip()))
    return out


def _base_type(type_token: str) -> str:
    t = re.sub(r"\[[^\]]*\]$", "", type_token)  # T[], T[3], T[<=3]
    return re.sub(r"<=\d+$", "", t)  # string<=10


def _ros_imports(path: Path) -> set[str]:
    """Top-level names of ROS modules imported anywhere in a Python file (also inside try/functions)."""
    names = set()
    for m in IMPORT_RE.finditer(path.read_text()):
        if m.group(1):
            candidates = [m.group(1)]
        else:
            candidates = [part.strip().split()[0].split(".")[0] for part in m.group(2).split(",") if part.strip()]
        names.update(c for c in candidates if ROS_MODULE_RE.match(c))
    return names


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


# ------------------------------------------------------------------------------------------------
# package.xml


def test_package_xml_is_format_3_and_names_this_package():
    root = _package_xml()
    assert root.tag == "package" and root.get("format") == "3"
    assert root.findtext("name") == "semantic_mapping"
    init = (ROOT / "semantic_mapping" / "__init__.py").read_text()
    version = re.search(r'__version__\s*=\s*"([^"]+)"', init).group(1)
    assert root.findtext("version") == version, "package.xml and semantic_mapping.__version__ disagree"
    setup_version = re.search(r'version="([^"]+)"', (ROOT / "setup.py").read_text()).group(1)
    assert root.findtext("version") == setup_version, "package.xml and setup.py versions disagree"
    assert root.findtext("license") == "Apache-2.0"
    assert (root.findtext("description") or "").strip()
    maintainer = root.find("maintainer")
    assert maintainer is not None and maintainer.get("email") and (maintainer.text or "").strip()
    assert root.findtext("export/build_type") == "ament_cmake"
    assert "rosidl_interface_packages" in _deps(root, "member_of_group")


def test_package_xml_declares_the_build_tools_and_runtime():
    root = _package_xml()
    assert {"ament_cmake", "ament_cmake_python", "rosidl_default_generators"} <= _deps(root, "buildtool_depend")
    assert "rosidl_default_runtime" in _run_deps(root)
    for pkg in ("rclpy", "std_msgs", "sensor_msgs", "geometry_msgs", "nav_msgs", "visualization_msgs",
                "builtin_interfaces", "std_srvs"):
        assert pkg in _run_deps(root) and pkg in _build_deps(root), f"{pkg} must be a <depend>"


def test_every_ros_module_imported_by_the_ros_layer_is_a_dependency():
    sources = sorted(ROS_SOURCES.rglob("*.py")) + sorted((ROOT / "launch").glob("*.py"))
    sources.append(ROOT / "scripts" / "mapping_node")
    run_deps = _run_deps(_package_xml())
    missing = {}
    for path in sources:
        for module in _ros_imports(path) - run_deps:
            missing.setdefault(module, []).append(str(path.relative_to(ROOT)))
    assert not missing, f"imported but not a <depend>/<exec_depend> in package.xml: {missing}"


def test_the_library_outside_ros_imports_no_ros_module():
    offenders = {}
    for path in sorted((ROOT / "semantic_mapping").rglob("*.py")):
        if ROS_SOURCES in path.parents:
            continue
        found = _ros_imports(path)
        if found:
            offenders[str(path.relative_to(ROOT))] = sorted(found)
    assert not offenders, f"only semantic_mapping/ros/ may import ROS modules: {offenders}"


# ------------------------------------------------------------------------------------------------
# CMakeLists.txt and the interface files


def test_every_interface_file_is_generated():
    files, _ = _rosidl_call()
    on_disk = {str(p.relative_to(ROOT)) for p in _interface_files()}
    assert on_disk, "no msg/srv files"
    assert set(files) == on_disk, (
        f"not in rosidl_generate_interfaces: {sorted(on_disk - set(files))}; "
        f"listed but missing: {sorted(set(files) - on_disk)}"
    )
    assert len(files) == len(set(files)), "an interface file is listed twice"


def test_required_interfaces_exist():
    names = {p.name for p in _interface_files()}
    assert {"ObjectSlot.msg", "ObjectSlotArray.msg", "LabelSpace.msg", "SaveMap.srv", "LoadMap.srv"} <= names


def test_every_field_type_is_primitive_or_from_a_declared_package():
    _, cmake_deps = _rosidl_call()
    root = _package_xml()
    build_deps, run_deps = _build_deps(root), _run_deps(root)
    own_messages = {p.stem for p in ROOT.glob("msg/*.msg")}
    cmake = _cmake_text()
    problems = []
    for path in _interface_files():
        sections = 1
        for no, code, _comment in _field_lines(path):
            where = f"{path.relative_to(ROOT)}:{no}"
            if code == "---":
                sections += 1
                continue
            parts = code.split(None, 1)
            if len(parts) != 2:
                problems.append(f"{where}: cannot parse {code!r}")
                continue
            type_token, rest = parts
            base = _base_type(type_token)
            if base in PRIMITIVE_TYPES:
                continue
            if "/" in base:
                pkg, _, name = base.partition("/")
                if pkg == "semantic_mapping":
                    if name not in own_messages:
                        problems.append(f"{where}: {base} is not in msg/")
                    continue
                if pkg not in build_deps or pkg not in run_deps:
                    problems.append(f"{where}: {pkg} (for {base}) is not a <depend> in package.xml")
                if pkg not in cmake_deps:
                    problems.append(f"{where}: {pkg} is not in rosidl_generate_interfaces DEPENDENCIES")
                if not re.search(rf"find_package\(\s*{pkg}\s+REQUIRED", cmake):
                    problems.append(f"{where}: CMakeLists.txt does not find_package({pkg} REQUIRED)")
            elif base not in own_messages:
                problems.append(f"{where}: {type_token} is neither primitive, pkg/Type, nor a message in msg/")
        expected_sections = {".msg": 1, ".srv": 2, ".action": 3}[path.suffix]
        if sections != expected_sections:
            problems.append(f"{path.relative_to(ROOT)}: {sections} sections separated by ---, "
                            f"expected {expected_sections}")
    assert not problems, "\n".join(problems)


def test_field_names_are_valid_and_every_field_is_commented():
    problems = []
    for path in _interface_files():
        for no, code, comment in _field_lines(path):
            if code == "---":
                continue
            where = f"{path.relative_to(ROOT)}:{no}"
            _type, rest = code.split(None, 1)
            if "=" in rest:  # constant: NAME=value
                name = rest.split("=", 1)[0].strip()
                if not re.fullmatch(r"[A-Z][A-Z0-9_]*", name):
                    problems.append(f"{where}: constant {name!r} must be UPPER_CASE")
                continue
            name = rest.split()[0]
            if not re.fullmatch(r"[a-z][a-z0-9_]*", name) or "__" in name or name.endswith("_"):
                problems.append(f"{where}: field name {name!r} is not valid for rosidl")
            if not comment:
                problems.append(f"{where}: field {name!r} has no comment (say what it is and its unit)")
    assert not problems, "\n".join(problems)


def test_cmakelists_installs_sources_node_and_share_files():
    cmake = _cmake_text()
    assert re.search(r"cmake_minimum_required\(VERSION 3\.(1[6-9]|[2-9]\d)", cmake)
    assert re.search(r"project\(semantic_mapping\)", cmake)
    for pkg in ("ament_cmake", "ament_cmake_python", "rosidl_default_generators"):
        assert re.search(rf"find_package\(\s*{pkg}\s+REQUIRED", cmake), pkg
    # rosidl_generator_py owns the ament_python_install_package() of the name semantic_mapping.
    assert "ament_python_install_package" not in cmake
    src = re.search(r"install\(\s*DIRECTORY\s+semantic_mapping/\s+DESTINATION\s+\"?\$\{PYTHON_INSTALL_DIR\}", cmake)
    assert src, "the library sources must be installed into ${PYTHON_INSTALL_DIR}/semantic_mapping"
    rosidl = cmake.index("rosidl_generate_interfaces")
    assert src.start() > rosidl, (
        "install the sources after rosidl_generate_interfaces, so that our __init__.py replaces the generated one"
    )
    assert re.search(r"install\(\s*PROGRAMS\s+scripts/mapping_node\s+DESTINATION\s+lib/\$\{PROJECT_NAME\}", cmake)
    assert re.search(r"install\(\s*DIRECTORY\s+launch\s+config\s+DESTINATION\s+share/\$\{PROJECT_NAME\}", cmake)
    assert cmake.rstrip().endswith("ament_package()")


def test_node_wrapper_script_calls_the_node_main():
    script = ROOT / "scripts" / "mapping_node"
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env python3\n")
    assert os.access(script, os.X_OK), "scripts/mapping_node must be executable"
    tree = ast.parse(text)
    imports = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert any(n.module == "semantic_mapping.ros.mapping_node" and any(a.name == "main" for a in n.names)
               for n in imports)
    node = ROS_SOURCES / "mapping_node.py"
    if node.exists():
        functions = {n.name for n in ast.parse(node.read_text()).body if isinstance(n, ast.FunctionDef)}
        assert "main" in functions, "semantic_mapping/ros/mapping_node.py must define main()"


def test_build_outputs_and_ros_venv_are_gitignored():
    ignored = set((ROOT / ".gitignore").read_text().split())
    assert {".ros_venv/", "build_ros/", "install_ros/"} <= ignored


# ------------------------------------------------------------------------------------------------
# the colcon build (scripts/build_ros.sh)


def _require_build() -> None:
    if (INSTALL_BASE / "setup.bash").exists():
        return
    if _ci():
        pytest.fail(
            "install_ros/setup.bash is missing although CI is set: CI must run scripts/build_ros.sh "
            "before the tests (it builds the messages with colcon into install_ros/)"
        )
    pytest.skip("install_ros/ not built: run scripts/build_ros.sh to test the generated messages")


def _run_in_ros_env(code: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run Python code after `source install_ros/setup.bash`, in a clean environment, outside the repo.

    Outside the repository root, because `python -c` puts the working directory first on sys.path and
    the source tree's semantic_mapping (no generated msg/) would shadow the installed one.
    """
    env = {
        "HOME": os.environ.get("HOME", str(cwd)),
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "ROS_LOG_DIR": str(cwd / "ros_log"),
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
    }
    python = ROS_VENV / "bin" / "python"
    # setup.bash chains the venv's local_setup (PATH, AMENT_PREFIX_PATH); name its python explicitly anyway.
    interpreter = f'"{python}"' if python.exists() else "python3"
    script = f'set -e\nsource "{INSTALL_BASE}/setup.bash"\nexec {interpreter} -c "$1"\n'
    return subprocess.run(
        ["bash", "-c", script, "_", code],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )


ROUND_TRIP = textwrap.dedent(
    """
    import json
    from pathlib import Path

    import semantic_mapping
    from builtin_interfaces.msg import Time
    from rclpy.serialization import deserialize_message, serialize_message
    from semantic_mapping.msg import LabelSpace, MapperStatus, ObjectSlot, ObjectSlotArray
    from semantic_mapping.srv import LoadMap, SaveMap
    from std_msgs.msg import ColorRGBA

    slot = ObjectSlot()
    slot.header.frame_id = "map"
    slot.header.stamp = Time(sec=12, nanosec=345)
    slot.id = 4000000000
    slot.class_id = ObjectSlot.CLASS_UNKNOWN
    slot.class_name = "chair"
    slot.confidence = 0.75
    slot.centroid.x, slot.centroid.y, slot.centroid.z = 1.0, -2.5, 0.25
    slot.box_pose.position.x = 1.0
    slot.box_pose.orientation.z, slot.box_pose.orientation.w = 0.6, 0.8
    slot.box_size.x, slot.box_size.y, slot.box_size.z = 0.5, 0.25, 1.0
    slot.voxel_count = 1234
    slot.first_seen = Time(sec=1, nanosec=2)
    slot.last_seen = Time(sec=3, nanosec=4)
    slot.observed_fraction = 0.5

    data = serialize_message(slot)
    back = deserialize_message(data, ObjectSlot)
    assert back == slot, (back, slot)
    assert back.class_id == -1 and back.id == 4000000000 and back.class_name == "chair"

    array = ObjectSlotArray(slots=[slot, ObjectSlot(id=7)])
    array.header.frame_id = "map"
    assert deserialize_message(serialize_message(array), ObjectSlotArray) == array

    labels = LabelSpace(ids=[0, 1, 65535], names=["void", "wall", "x"], ignore_id=65535,
                        colors=[ColorRGBA(r=1.0, a=1.0)] * 3)
    assert deserialize_message(serialize_message(labels), LabelSpace) == labels

    status = MapperStatus(frames_integrated=10, drop_reasons=["no_pose"], drop_counts=[2], latency_ms_p95=33.5)
    assert deserialize_message(serialize_message(status), MapperStatus) == status

    request = SaveMap.Request(path="/tmp/map")
    assert deserialize_message(serialize_message(request), SaveMap.Request) == request
    response = LoadMap.Response(success=True, message="ok")
    assert deserialize_message(serialize_message(response), LoadMap.Response) == response

    print(json.dumps({
        "package_file": semantic_mapping.__file__,
        "init_source": Path(semantic_mapping.__file__).read_text(),
        "msg_file": __import__("semantic_mapping.msg", fromlist=["x"]).__file__,
        "bytes": len(data),
    }))
    """
)


def test_built_interfaces_import_and_round_trip_through_rclpy_serialization(tmp_path):
    _require_build()
    result = _run_in_ros_env(ROUND_TRIP, tmp_path)
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    info = json.loads(result.stdout.strip().splitlines()[-1])
    installed = Path(info["package_file"]).resolve()
    assert INSTALL_BASE.resolve() in installed.parents, f"semantic_mapping imported from {installed}"
    assert Path(info["msg_file"]).parent.parent == installed.parent
    # The generated package and the library share one folder, and its __init__.py is ours.
    assert info["init_source"] == (ROOT / "semantic_mapping" / "__init__.py").read_text()
    assert info["bytes"] > 0


def test_built_install_has_node_wrapper_and_share_files():
    _require_build()
    prefix = INSTALL_BASE / "semantic_mapping"
    node = prefix / "lib" / "semantic_mapping" / "mapping_node"
    assert node.exists() and os.access(node, os.X_OK)
    share = prefix / "share" / "semantic_mapping"
    assert (share / "package.xml").exists()
    for name in ("ObjectSlot", "ObjectSlotArray", "LabelSpace"):
        assert (share / "msg" / f"{name}.msg").exists()
    assert (share / "config" / "classes.yaml").exists()
