"""The launch file and RViz config, checked statically (launch and rviz are not installable here)."""

from __future__ import annotations

import ast
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import yaml

from semantic_mapping.ros.node_config import NODE_NAME, PUBLISHED_TOPICS, SUBSCRIBED_TOPICS, NodeConfig, resolved_topic

ROOT = Path(__file__).resolve().parent.parent
LAUNCH = ROOT / "launch" / "mapping.launch.py"


def _tree() -> ast.Module:
    return ast.parse(LAUNCH.read_text())


def _constants(tree: ast.Module) -> dict:
    """Module-level NAME = "string" / os.path.join("a", "b") / {str: str} assignments."""
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            value = node.value
            name = node.targets[0].id
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                out[name] = value.value
            elif isinstance(value, ast.Call) and ast.unparse(value.func) == "os.path.join":
                parts = [a.value for a in value.args if isinstance(a, ast.Constant)]
                if len(parts) == len(value.args):
                    out[name] = "/".join(parts)
            elif isinstance(value, ast.Dict):
                out[name] = {k.value: v.value for k, v in zip(value.keys, value.values)}
    return out


def _value(node: ast.AST, constants: dict):
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return constants.get(node.id)
    return None


def _started_nodes() -> list:
    tree = _tree()
    constants = _constants(tree)
    nodes = []
    for call in ast.walk(tree):
        if isinstance(call, ast.Call) and ast.unparse(call.func) == "Node":
            kw = {k.arg: _value(k.value, constants) for k in call.keywords}
            nodes.append(kw)
    return nodes


def _cmake() -> str:
    return re.sub(r"#[^\n]*", "", (ROOT / "CMakeLists.txt").read_text())


def test_every_started_executable_is_installed_or_a_declared_dependency():
    nodes = _started_nodes()
    assert nodes, "the launch file starts no Node"
    ours = [n for n in nodes if n.get("package") == "semantic_mapping"]
    assert ours and all(n.get("executable") for n in nodes)
    cmake = _cmake()
    package_deps = {(e.text or "").strip() for e in ET.parse(ROOT / "package.xml").getroot()
                    if e.tag in ("depend", "exec_depend")}
    for node in nodes:
        if node["package"] == "semantic_mapping":
            exe = node["executable"]
            assert re.search(rf"install\(\s*PROGRAMS\s+[^)]*scripts/{re.escape(exe)}\b[^)]*DESTINATION\s+lib/\$\{{PROJECT_NAME\}}",
                             cmake), f"{exe} is not installed to lib/semantic_mapping by CMakeLists.txt"
            assert (ROOT / "scripts" / exe).exists()
            assert node.get("name") == NODE_NAME
        else:
            assert node["package"] in package_deps, f"{node['package']} is not an exec_depend in package.xml"


def test_every_named_file_exists_and_is_installed():
    constants = _constants(_tree())
    files = [v for v in constants.values() if isinstance(v, str) and re.search(r"\.(yaml|rviz)$", v)]
    assert "config/mapping.yaml" in files and "config/semantic_mapping.rviz" in files
    for rel in files:
        assert (ROOT / rel).is_file(), f"the launch file names {rel}, which does not exist"
    assert re.search(r"install\(\s*DIRECTORY\s+launch\s+config\s+DESTINATION\s+share/\$\{PROJECT_NAME\}", _cmake())


def test_launch_arguments_and_remaps():
    text = LAUNCH.read_text()
    declared = set(re.findall(r'DeclareLaunchArgument\(\s*"(\w+)"', text))
    assert {"params_file", "namespace", "use_sim_time", "rviz", "camera", "camera_namespace"} <= declared
    constants = _constants(_tree())
    for table in ("REALSENSE_REMAPS", "NAMESPACE_REMAPS"):
        for source in constants[table]:
            assert source in SUBSCRIBED_TOPICS, f"{table} remaps {source!r}, which the node does not subscribe"


def test_object_launch_arguments_set_declared_parameters():
    from semantic_mapping.objects.slots import MASK_SOURCES
    from semantic_mapping.ros.node_config import parameter_specs

    text = LAUNCH.read_text()
    declared = set(re.findall(r'DeclareLaunchArgument\(\s*"(\w+)"', text))
    assert {"objects", "object_masks", "objects_rate_hz", "completion"} <= declared
    # every parameter the launch file sets by name is one the node declares
    names = {s.name for s in parameter_specs()} | {"config_file", "use_sim_time"}
    set_by_launch = set(re.findall(r'"((?:objects|node|voting|completion)\.[\w.]+)"', text))
    assert {"objects.enabled", "objects.mask_source", "node.objects_rate_hz", "completion.enabled"} <= set_by_launch
    assert set_by_launch <= names, set_by_launch - names
    tree = _tree()
    sources = next(ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                   and getattr(n.targets[0], "id", None) == "OBJECT_MASK_SOURCES")
    assert tuple(sources) == tuple(MASK_SOURCES)


def _rviz_topics(data) -> list:
    found = []
    if isinstance(data, dict):
        for key, value in data.items():
            if key == "Topic":
                found.append(value["Value"] if isinstance(value, dict) else value)
            else:
                found += _rviz_topics(value)
    elif isinstance(data, list):
        for item in data:
            found += _rviz_topics(item)
    return found


def test_rviz_config_displays_only_topics_the_node_publishes_in_the_map_frame():
    rviz = yaml.safe_load((ROOT / "config" / "semantic_mapping.rviz").read_text())
    manager = rviz["Visualization Manager"]
    assert manager["Global Options"]["Fixed Frame"] == NodeConfig().map_frame
    topics = _rviz_topics(manager["Displays"])
    published = {resolved_topic(t) for t in PUBLISHED_TOPICS}
    assert topics, "the RViz config displays no topic"
    assert set(topics) <= published, f"displayed but not published: {set(topics) - published}"
    for wanted in ("~/voxels", "~/mesh", "~/traversability"):
        assert resolved_topic(wanted) in topics
    classes = {d["Topic"]["Value"]: d["Class"] for d in manager["Displays"] if "Topic" in d}
    assert classes[resolved_topic("~/voxels")] == "rviz_default_plugins/PointCloud2"
    assert classes[resolved_topic("~/mesh")] == "rviz_default_plugins/Marker"
    assert classes[resolved_topic("~/traversability")] == "rviz_default_plugins/Map"
    assert classes[resolved_topic("~/object_markers")] == "rviz_default_plugins/MarkerArray"
    objects = next(d for d in manager["Displays"] if d.get("Topic", {}).get("Value") == resolved_topic("~/object_markers"))
    assert objects["Topic"]["Durability Policy"] == "Transient Local"  # the node publishes it transient-local
