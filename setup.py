"""pip install . gives the library and the `semantic-mapping` CLI without ROS.

colcon builds the same folder as an ament_cmake package (CMakeLists.txt) for the ROS node and messages.
"""

from setuptools import find_packages, setup

setup(
    name="semantic_mapping",
    version="0.1.0",
    description="Semantic 3D mapping from posed RGB-D streams: TSDF fusion, 2D-to-3D semantic voting, "
    "scene completion, Gaussian-splat renders and object slots; a ROS 2 package and a Python library.",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["semantic_mapping", "semantic_mapping.*"]),
    package_data={"semantic_mapping": ["completion/weights/*", "semantics/weights/*"]},
    data_files=[
        ("share/semantic_mapping/config", ["config/mapping.yaml", "config/classes.yaml"]),
    ],
    install_requires=[
        "numpy>=1.24,<3",
        "scipy>=1.10",
        # Pinned so that an install takes the CPU build (a newer torch pulls the CUDA stack).
        "torch>=2.1,<=2.13.0",
        # The CPU build of Open3D; on a CUDA machine install `open3d` instead for GPU fusion.
        "open3d-cpu>=0.18",
        "opencv-python-headless>=4.8",
        "pyyaml>=6",
        "tqdm>=4.60",
        "rosbags>=0.10",
        "matplotlib>=3.7",
    ],
    # gsplat rasterises the Gaussian renders on CUDA (it compiles its kernels on first use); the CPU
    # renderer is ours and needs nothing more.
    extras_require={"test": ["pytest>=7"], "cuda": ["gsplat>=1.4"]},
    entry_points={"console_scripts": ["semantic-mapping=semantic_mapping.cli:main"]},
)
