"""semantic_mapping: posed RGB-D frames with 2D semantics in, a semantic 3D map out.

The library never imports rclpy; the ROS layer lives in `semantic_mapping.ros`.
"""

from pkgutil import extend_path

# A colcon install puts the generated `msg`/`srv` subpackages beside these sources; extending the
# path lets them be found even when a source checkout comes first on sys.path.
__path__ = extend_path(__path__, __name__)

__version__ = "0.1.0"
