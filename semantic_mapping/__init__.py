"""semantic_mapping: posed RGB-D frames with 2D semantics in, a semantic 3D map out.

The library never imports rclpy; the ROS layer lives in `semantic_mapping.ros`.
"""

__version__ = "0.1.0"
