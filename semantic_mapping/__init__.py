"""semantic_mapping: posed RGB-D frames with 2D semantics in, a semantic 3D map out.

The library never imports rclpy; the ROS layer lives in `semantic_mapping.ros`.
"""

import os
from pkgutil import extend_path

# torch and Open3D each bring an OpenMP runtime; with the default active waiting, the idle threads of
# one spin on the cores the other needs (integration measured 10x slower on 2 cores). Passive waiting
# must be set before either library loads, so import semantic_mapping before torch and open3d.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# A colcon install puts the generated `msg`/`srv` subpackages beside these sources; extending the
# path lets them be found even when a source checkout comes first on sys.path.
__path__ = extend_path(__path__, __name__)

__version__ = "0.1.0"
