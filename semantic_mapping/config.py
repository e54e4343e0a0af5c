"""Configuration: one dataclass per component, every field documented with its unit.

`config/mapping.yaml` holds the defaults the node and the CLI read; `load_config` turns a
YAML file (or a dict) into a `MapperConfig` and refuses unknown keys by name.
Runtime state never lives here.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, get_type_hints

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- map engine
@dataclass
class FusionConfig:
    """Sparse chunked TSDF/colour/semantic voxel map."""

    voxel_size_m: Optional[float] = None
    """Voxel edge length; None picks 0.02 on CUDA and 0.04 on CPU."""
    sdf_trunc_voxels: float = 4.0
    """Truncation distance of the TSDF, in voxels."""
    depth_min_m: float = 0.1
    """Depth readings nearer than this are ignored."""
    depth_max_m: float = 5.0
    """Depth readings beyond this are ignored."""
    block_resolution: int = 8
    """Voxels along each edge of a hash block."""
    initial_block_capacity: int = 2048
    """Hash blocks allocated up front; the map grows past this on demand."""
    device: str = "auto"
    """'auto' (CUDA when present), 'cpu', 'cuda' or 'cuda:N'."""
    max_weight: int = 2000
    """Observations a voxel's running averages remember at most (older ones fade)."""
    surface_weight_threshold: float = 2.0
    """Integrated weight a voxel needs before it counts as observed surface."""
    chunk_shape_voxels: tuple = (64, 64, 128)
    """Chunk size (x, y, z) in voxels read by the completion network (SSR-2D subvolumes)."""


@dataclass
class SemanticFusionConfig:
    """Per-voxel class distribution updated from per-pixel 2D semantics."""

    method: str = "bayesian"
    """'bayesian': every frame's pixels multiply their voxels' class distributions (log-probability
    accumulation); 'voting': in addition, keyframes vote each voxel they see with the learned soft
    vote (`VotingConfig`), and each vote multiplies the voxel's distribution the same way."""
    label_confidence: float = 0.7
    """Probability given to a label image's class where no confidence image comes with it."""
    probability_floor: float = 0.3
    """Class probabilities are raised to at least this (then renormalised) before they multiply a voxel's
    distribution, bounding what one confident mistake can do (tuned on development scenes: 1e-3 gave
    +0.2, 0.1 +5.4, 0.3 +8.0 points of 3D mIoU over the 2D input)."""
    min_log_prob: float = -30.0
    """Per-voxel log-probabilities (relative to the best class) are clamped at this."""
    pixel_stride: Optional[int] = None
    """Every Nth pixel along each axis votes for the voxel holding its surface point; None: the largest
    stride whose pixel footprint at fusion.depth_max_m stays under a voxel."""
    pixel_interleave: int = 2
    """Consecutive frames take turns over the k x k interleaved subsets of the sampled pixels (1: all, every frame)."""
    context_iterations: int = 96
    """Labels are read with their surface neighbourhood (`semantics.context`): each voxel's distribution
    times the mean distribution of the surface around it (26-neighbours whose normals agree, averaged this
    many times over), to the power `context_weight`. 0: every voxel's own distribution. Chosen on
    development seeds 101, 36, 88, 102 (300 frames, 4 cm; mean 3D mIoU of learned voting / Bayesian
    fusion): 24 iterations at weight 30 (the earlier default) 0.7793 / 0.7577, 64 at 10 0.8008 / 0.7663,
    96 at 10 0.8064 / 0.7693; checked on seeds 93, 100, 103: 0.7227 / 0.7013 at (24, 30), 0.7461 / 0.7072
    at (96, 10). The votes' mean keeps hedged distributions, which a wider neighbourhood settles. The
    cost grows with the iterations and the map: 50-90 ns per iteration per labelled voxel on one core."""
    context_min_normal_dot: float = 0.9
    """Neighbours share their distributions only when their TSDF normals agree this well (cosine), so the
    context stops at edges (wall to floor, table top to its side). 0.6 / 0.8 / 0.9 gave 0.7589 / 0.7693 /
    0.7733 with learned voting at 24 iterations on development seeds 33-36, 87, 88, 93."""
    context_weight: float = 10.0
    """Exponent of the neighbourhood's mean distribution against the voxel's own (chosen with
    `context_iterations`, above)."""
    context_similarity_power: float = 2.0
    """Each neighbour's share in the average is the similarity of the two voxels' distributions
    (Bhattacharyya coefficient, 1 when alike, 0 when disjoint) to this power, so the context slows at
    label edges and keeps small objects from their surroundings (an object on a desk read as desk).
    0: equal shares. Chosen for learned voting at 96 iterations, weight 10, on development seeds 107,
    109, 101, 36, 88, 102: voting 0.7889 / 0.7917 / 0.7932 / 0.7908 at powers 0 / 1 / 2 / 4 (Bayesian
    fusion 0.7537 / 0.7547 / 0.7544 / 0.7503); checked on seeds 110-115: voting 0.8080 -> 0.8114,
    Bayesian 0.7891 -> 0.7885 (power 0 -> 2)."""
    context_vote_weight_ref: float = 20.0
    """With frame votes, a voxel's evidence in its read-out is e = (W / context_vote_weight_ref)^
    context_vote_weight_power, W the total weight of the votes in its mean (in average pixel votes; e = 1
    where none voted, so Bayesian fusion reads as before): its own distribution counts e times against
    its neighbourhood's, and it counts e as a neighbour. A votes' mean does not sharpen with more views
    as Bayesian fusion's product does; this puts the number and trust of the views back. 0: off. Chosen
    for learned voting at 96 iterations, weight 10, similarity power 2, on development seeds 107, 101,
    88, 109, 36, 102, 110-113 (points of 3D mIoU over Bayesian fusion): off +2.53; reference 20 at
    power 0.5 +4.79 (reference 5: +4.94; powers 0.75 / 1: +4.68 / +4.06); own distribution scaled by
    W / 20 with neighbour shares by (W / 20)^0.5 +4.87. Checked under the hard noise on seeds 104-109:
    off +2.25, chosen +4.23."""
    context_vote_weight_power: float = 0.5
    """See `context_vote_weight_ref`."""
    context_max_age_s: float = 0.0
    """The labels' context is recomputed over the whole map when it changed and is older than this (0:
    whenever the map changed); voxels labelled since then read their own distribution. The ROS node
    refreshes it in a thread of its own, off the map lock, when a read found it out of date and it is
    this old (the launch file: 2 s); its reads never wait for a refresh."""


@dataclass
class KeyframeConfig:
    """Keyframe selection, storage and multi-view sampling for soft voting."""

    max_keyframes: int = 32
    """Keyframes kept at most; adding one more evicts the most redundant (see `KeyframeBuffer`)."""
    min_translation_m: float = 0.15
    """A frame whose camera moved at least this far from the newest keyframe becomes a keyframe."""
    min_rotation_deg: float = 10.0
    """A frame whose camera turned at least this much from the newest keyframe becomes a keyframe."""
    max_overlap: float = 0.8
    """A frame whose view overlap with the newest keyframe (fraction of its depth grid the keyframe
    sees) is below this becomes a keyframe, however little it moved."""
    overlap_grid_stride_px: int = 16
    """Stride, in full-resolution pixels, of the depth grid reprojected to estimate overlap."""
    overlap_depth_tolerance_m: float = 0.1
    """A reprojected grid point further than this behind the keyframe's depth is occluded there (no overlap)."""
    downsample: int = 4
    """Stored images are this many times smaller along each axis (640x480 -> 160x120 for 4)."""
    views_per_voxel: int = 8
    """Keyframes sampled per point (N); the nearest camera centres among those that see the point."""


@dataclass
class VotingConfig:
    """Learned soft voting (semantics.method = 'voting'): keyframes vote each surface voxel's class
    distribution (GNeSF Eq. 3-4), and the votes are fused into the voxel's persistent distribution."""

    weights: Optional[str] = None
    """Voting network checkpoint; None: the weights shipped in the package. Missing or unusable
    weights log an error and the mapper falls back to 'bayesian'."""
    learned: bool = True
    """False: every view gets the same voting weight (the non-learned soft vote, for comparison;
    the weights are read only for the geometry prior)."""
    geometry_prior: bool = True
    """Multiply every observation of a voxel by the network's learned class prior given the voxel's
    surface normal and height above the floor (`prior_weight`, `prior_floor`, `floor_z_m`); False:
    Eq. 4 votes only."""
    prior_weight: float = 0.2
    """Exponent of the geometry prior per observation (a frame's pixels have 1). Chosen on development
    seeds 33-36 (300 frames; weights trained on 150 frames of seeds 20-31): 0.1 / 0.2 / 0.3 gave
    +3.9 / +4.7 / +5.2 points of 3D mIoU over Bayesian fusion, and under the benchmark's hard noise
    (seeds 33, 35) +6.1 / +5.9 / +4.9; 0.2 does well on both."""
    prior_floor: float = 0.1
    """The prior's class probabilities are raised to at least this, then renormalised, so a surface
    orientation shifts a class by at most prior_weight * log(1 / prior_floor) nats per observation."""
    floor_z_m: float = 0.0
    """Height of the floor in the world frame (z up), from which the geometry prior reads heights (the
    simulator's floor, and that of a map frame on a ground robot's base, is at 0)."""
    frame_votes: bool = True
    """Every integrated frame's pixels vote their class probabilities into each voxel's running weighted
    mean, weighted by a learned function of what the view makes of the point (`semantics.frame_votes`,
    GNeSF Eq. 4 over all views); the keyframe votes join that mean. False: frames multiply the
    distribution as in Bayesian fusion and the keyframe votes multiply it too."""
    frame_vote_weights: Optional[str] = None
    """Frame-vote network checkpoint; None: the weights shipped in the package. Its votes average
    probabilities, or logits when it was trained for them (`train-voting --frame-votes --vote-space`)."""
    keyframe_votes: bool = False
    """Keyframes vote the voxels they see (GNeSF Eq. 3-4 over the `views_per_voxel` nearest keyframes that
    pass the visibility test, from their image features, the TSDF geometry and the displacement) and
    the votes join each voxel's distribution with weight `vote_weight`. Off by default: next to the
    frame votes they lower 3D mIoU (see the README); without frame votes they add to Bayesian fusion."""
    keyframes: KeyframeConfig = field(default_factory=KeyframeConfig)
    visibility: bool = True
    """Use a view for a voxel only if the fused TSDF shows no surface between them (GNeSF §4.2)."""
    vote_weight: float = 2.0
    """Weight of a keyframe vote: with frame votes, in units of an average frame vote in the voxel's mean;
    without, the exponent with which it multiplies the distribution (a frame's pixels have 1). Checked
    with the shipped weights on development seeds 33-36, 87, 88, 93 (300 frames; Bayesian 0.6900 mean
    3D mIoU): 0.001 / 1 / 2 / 5 / 10 gave 0.7266 / 0.7304 / 0.7289 / 0.7233 / 0.7193. The votes add
    0.2-0.4 points over the geometry prior alone, and weigh less than the frames' own pixels."""
    max_voxels_per_frame: int = 0
    """Voxels voted per integrated frame at most (the rest wait, oldest first); 0: all voxels a new
    keyframe sees are voted when it arrives. A live node bounds it to keep its input rate."""
    max_pending_voxels: int = 200000
    """Voxels waiting for a vote at most; beyond it the oldest are dropped (and counted)."""
    batch_voxels: int = 4096
    """Voxels voted together (memory: about batch x views x (classes + 16) floats)."""


@dataclass
class InputConfig:
    """Validation of incoming frames."""

    allow_stamp_rewind: bool = False
    """Accept frames whose stamp is older than the last integrated one (else reject and count)."""
    rigidity_tolerance: float = 1e-3
    """Largest deviation of a pose's rotation from orthonormal before the frame is rejected."""
    min_valid_depth_fraction: float = 0.01
    """Frames with fewer valid depth pixels than this fraction are rejected."""


@dataclass
class OutputConfig:
    """Map outputs: labelled voxels, mesh, traversability grid."""

    grid_resolution_m: Optional[float] = None
    """Traversability grid cell size; None uses the voxel size."""
    robot_height_m: float = 1.2
    """Obstacles between the floor and this height above it block the robot."""
    floor_clearance_m: float = 0.1
    """Non-floor surfaces lower than this above the floor do not block (thresholds, rugs)."""


@dataclass
class SplattingConfig:
    """Gaussian-splat renders of the map (RT-GS2): one flattened 3D Gaussian per observed surface voxel."""

    backend: str = "auto"
    """'auto' (gsplat when the map is on CUDA and gsplat imports, else ours), 'gsplat' or 'cpu'."""
    tangent_scale_voxels: float = 0.6
    """Standard deviation of a Gaussian along the surface, in voxels."""
    normal_scale_voxels: float = 0.1
    """Standard deviation of a Gaussian across the surface, in voxels (flattened along the normal)."""
    opacity_weight: float = 2.0
    """Opacity = max_opacity x (1 - exp(-weight / this)): a voxel seen more often is more opaque."""
    max_opacity: float = 0.99
    """Opacity of a voxel observed many times."""
    near_plane_m: float = 0.05
    """Gaussians nearer the camera than this are not drawn."""
    min_alpha: float = 0.5
    """Pixels whose accumulated opacity is below this get no label and no depth."""


@dataclass
class GeometricMaskConfig:
    """The built-in class-agnostic mask generator: depth and normal discontinuities cut the image,
    the 2D labels' connected components split what they leave (no network needed)."""

    depth_edge_rel: float = 0.04
    """Neighbouring pixels whose depths differ by more than this fraction of the nearer depth are an edge."""
    normal_edge_deg: float = 35.0
    """Neighbouring pixels whose surface normals differ by more than this angle (degrees) are an edge."""
    normal_window_px: int = 5
    """Side of the window (pixels of a 640-pixel-wide image) normals are estimated over from depth."""
    split_by_labels: bool = True
    """Also cut where the 2D semantic label changes (when the frame has labels or probabilities)."""


@dataclass
class ObjectsConfig:
    """Class-agnostic object slots (DiscoNeRF): a per-voxel feature field decoded to N competing slots,
    fitted to per-view 2D masks by soft-IoU affinity, Hungarian matching and Eq. 5-7 losses."""

    enabled: bool = True
    """Build object slots from the frames' class-agnostic masks."""
    mask_source: str = "auto"
    """'frame' (masks that come with the frame or topic), 'geometric' (built-in generator), or 'auto' (frame masks when present, else geometric)."""
    view_interval_frames: int = 10
    """Every this many integrated frames, one frame with masks becomes an object view."""
    view_width_px: int = 160
    """Width (pixels) at which masks and rendered slot images are compared; height keeps the aspect ratio."""
    max_views: int = 120
    """Object views kept for optimisation; beyond that the oldest are forgotten."""
    min_mask_area_fraction: float = 0.03
    """Masks under this fraction of the image are dropped (DiscoNeRF §7.1)."""
    contained_fraction: float = 0.9
    """A mask with this fraction of its area inside a larger one is dropped (§7.1)."""
    mask_dilation_px: int = 0
    """Dilate every mask by this many pixels (at the view width) before use (§7.1 dilates by 5 at full size)."""
    feature_dim: int = 16
    """Length of the learnable feature of each voxel of the field."""
    feature_levels: int = 3
    """Resolution levels of the field's features: cells of 1, 2, 4, ... voxels share a feature, summed per voxel."""
    hidden_dim: int = 32
    """Width of the hidden layer of the slot decoder MLP."""
    min_slots: int = 8
    """Fewest slots; N = max(this, 2 x the most masks seen in one view), grown when needed."""
    learning_rate: float = 0.05
    """Adam learning rate of the features and the decoder."""
    steps_per_view: int = 25
    """Optimisation steps run for every new object view."""
    batch_views: int = 8
    """Views per optimisation step: the newest plus randomly drawn older ones."""
    lambda_fp: float = 0.01
    """Weight of the false-positive loss (Eq. 6)."""
    lambda_tv: float = 0.01
    """Weight of the total-variation loss over neighbouring voxel features (Eq. 7)."""
    matching: str = "hungarian"
    """'hungarian' (one slot per mask per view, Eq. 4-5) or 'argmax' (each mask takes its best slot; ablation)."""
    mask_votes: bool = True
    """Extraction: each voxel takes the slot its kept views' masks are matched to most often (the field's own argmax where no mask covers it); False: the field's argmax alone."""
    join_share: float = 0.5
    """Two parts are one object when one mask covers both in at least this share of the kept views that see both and mask either (0: never joined)."""
    join_seams: bool = True
    """Extraction: two touching parts are also one object when one mask covers both along their seam (each part's voxels next to the other) in at least join_share of the kept views that see both sides and mask either; False: only whole parts are compared."""
    join_across_roles: bool = False
    """Extraction: also join a part the semantic map calls an object (half its labelled voxels or more) to one it calls floor or structure when masks cover both; False: never (a mask that takes a sink with its wall does not make them one object)."""
    join_class_overlap: float = 0.3
    """Extraction: two parts (or groups of joined parts) with labels are joined only when their mean class distributions overlap (sum of the minimum) by at least this much, so a mask that takes a chair with its table, or a wall with the floor, does not make them one object (0: any classes). It applies only with join_across_roles false."""
    unmasked_class_share: float = 0.25
    """Extraction: voxels that masks cover in under this share of the kept views that see them, and that the semantic map labels with an object class, are grouped by that class instead of by slot (objects too small for a mask in every view, or that no view saw); 0: off."""
    min_object_voxels: int = 30
    """A connected part of a slot with fewer voxels is not an object."""
    render_gap_fraction: float = 0.02
    """Rendered object images: pixels without an object (raycast cracks, surfaces no fused frame saw,
    voxels left out of every object) in gaps between objects up to this fraction of the image width wide
    take the nearest object's id; wider empty regions stay empty (0: off)."""
    seed: int = 0
    """Seed of the feature initialisation and of the view sampling."""
    geometric: GeometricMaskConfig = field(default_factory=GeometricMaskConfig)
    """The built-in mask generator used when frames bring no masks."""


@dataclass
class CompletionConfig:
    """SSR-2D scene completion of the live map: a background worker completes the chunks whose
    observations changed enough; predictions are kept beside the observations, which always win."""

    enabled: bool = False
    """Complete chunks while the map integrates (the packaged mapping.yaml turns it on for the node)."""
    weights: Optional[str] = None
    """Checkpoint from `semantic-mapping train-completion`; None: the shipped weights."""
    min_updates: int = 10
    """Integrated frames touching a chunk since its last completion before it is completed (again)."""
    context_voxels: int = 8
    """Voxels of the neighbouring chunks the network also reads on every side of a chunk."""
    include_predicted: bool = True
    """Outputs (labelled voxels, mesh, traversability grid) include predicted voxels where nothing was observed."""
    min_confidence: float = 0.0
    """Predicted voxels whose label probability (0..1) is below this are left out of the outputs."""
    threads: int = 1
    """CPU threads of the worker's network (set in its own thread; integration keeps its own)."""
    device: str = "auto"
    """Device of the network: 'auto' (CUDA when present), 'cpu', 'cuda' or 'cuda:N'."""


@dataclass
class MapperConfig:
    """Everything the `Mapper` needs."""

    fusion: FusionConfig = field(default_factory=FusionConfig)
    semantics: SemanticFusionConfig = field(default_factory=SemanticFusionConfig)
    inputs: InputConfig = field(default_factory=InputConfig)
    outputs: OutputConfig = field(default_factory=OutputConfig)
    voting: VotingConfig = field(default_factory=VotingConfig)
    splatting: SplattingConfig = field(default_factory=SplattingConfig)
    objects: ObjectsConfig = field(default_factory=ObjectsConfig)
    completion: CompletionConfig = field(default_factory=CompletionConfig)


# ----------------------------------------------------------------------------- simulation
@dataclass
class CameraConfig:
    """Simulated RGB-D camera."""

    width_px: int = 640
    """Image width."""
    height_px: int = 480
    """Image height."""
    fx: float = 525.0
    """Focal length x, pixels."""
    fy: float = 525.0
    """Focal length y, pixels."""
    cx: float = 319.5
    """Principal point x, pixels."""
    cy: float = 239.5
    """Principal point y, pixels."""
    rate_hz: float = 30.0
    """Frame rate."""
    rgb_noise_std_levels: float = 2.0
    """Standard deviation of the Gaussian noise added to each RGB channel, in 8-bit levels."""


@dataclass
class SceneConfig:
    """Procedural indoor scene."""

    min_rooms: int = 1
    """Fewest rooms."""
    max_rooms: int = 3
    """Most rooms."""
    min_room_size_m: float = 3.0
    """Shortest side of a room's free interior."""
    max_room_size_m: float = 8.0
    """Longest side of a room's free interior."""
    wall_height_min_m: float = 2.5
    """Lowest floor-to-ceiling height."""
    wall_height_max_m: float = 3.0
    """Highest floor-to-ceiling height."""
    wall_thickness_m: float = 0.1
    """Thickness of every wall."""
    slab_thickness_m: float = 0.1
    """Thickness of the floor and ceiling slabs."""
    door_width_min_m: float = 0.9
    """Narrowest door opening."""
    door_width_max_m: float = 1.1
    """Widest door opening."""
    door_height_m: float = 2.05
    """Height of door openings."""
    extra_door_prob: float = 0.3
    """Chance of a further opening between two rooms that a doorway already connects."""
    closed_door_prob: float = 0.5
    """Chance that such a further opening holds a closed door rather than an open doorway."""
    entrance_door_prob: float = 0.8
    """Chance of a closed door in an outer wall."""
    window_prob: float = 0.45
    """Chance of each of up to two windows on every outer wall of a room."""
    open_door_leaf_prob: float = 0.5
    """Chance that a doorway has its door leaf standing open beside it."""
    curtain_prob: float = 0.6
    """Chance that a window gets a pair of curtains."""
    robot_radius_m: float = 0.35
    """Free-floor clearance that must connect a room's doors after furniture is placed."""
    min_free_floor_fraction: float = 0.3
    """Least fraction of a room's floor that stays reachable with that clearance."""
    furniture_fill_fraction: float = 0.3
    """Furniture keeps being added until its footprints cover this fraction of a room's floor (or nothing fits)."""
    small_object_prob: float = 0.75
    """Chance that a support surface (table, desk, counter, shelf) carries small objects."""
    max_small_objects_per_surface: int = 4
    """Most small objects on one support surface."""


@dataclass
class TrajectoryConfig:
    """Handheld / robot camera path."""

    num_frames: int = 300
    """Frames to render."""
    start_stamp_ns: int = 1_000_000_000
    """Stamp of the first frame."""
    speed_min_m_s: float = 0.2
    """Slowest cruising speed (the camera slows further only in tight turns)."""
    speed_max_m_s: float = 0.5
    """Fastest speed."""
    height_min_m: float = 1.0
    """Lowest camera height above the floor."""
    height_max_m: float = 1.6
    """Highest camera height above the floor."""
    clearance_m: float = 0.4
    """Preferred distance from the camera to walls and furniture in the floor plan; less only where unavoidable."""
    min_clearance_m: float = 0.3
    """Hard lower bound on that distance anywhere on the path (doorways, gaps between furniture)."""
    waypoint_clearance_m: float = 0.8
    """Preferred free space around the waypoints the path visits in each room."""
    waypoints_per_10m2: float = 1.0
    """Waypoints visited per 10 square metres of room floor (at least 2 per room)."""
    look_around_deg: float = 70.0
    """Largest yaw offset from the direction of travel when looking at things."""
    look_period_s: float = 5.0
    """Typical time spent looking at one thing (furniture, objects, pictures) before the next."""
    max_yaw_rate_deg_s: float = 60.0
    """Largest yaw rate."""
    pitch_deg: float = -12.0
    """Mean camera pitch (negative looks down)."""
    pitch_range_deg: float = 10.0
    """Amplitude of the slow pitch variation."""
    roll_range_deg: float = 3.0
    """Amplitude of the slow roll variation (handheld wobble)."""
    grid_cell_m: float = 0.05
    """Cell size of the floor grid used for path planning."""


@dataclass
class DepthNoiseConfig:
    """Depth sensor model."""

    quantize_mm: bool = True
    """Round depth to whole millimetres."""
    sigma_base_m: float = 0.0012
    """Depth noise standard deviation at `sigma_offset_m` (Kinect-like: base + quadratic * (z - offset)^2)."""
    sigma_quadratic_per_m: float = 0.0019
    """Growth of the depth noise standard deviation with the squared range."""
    sigma_offset_m: float = 0.4
    """Range at which the depth noise is smallest."""
    min_range_m: float = 0.3
    """Nearer surfaces give no return."""
    max_range_m: float = 6.0
    """Farther surfaces give no return."""
    grazing_start_deg: float = 70.0
    """Incidence angle (to the surface normal) beyond which returns start to go missing."""
    grazing_end_deg: float = 85.0
    """Incidence angle beyond which no return comes back."""
    edge_jump_ratio: float = 0.04
    """A depth jump to a 4-neighbour larger than this fraction of the depth marks an object edge."""
    edge_dropout_prob: float = 0.7
    """Chance that a pixel on an object edge has no return."""
    edge_width_px: int = 1
    """Half-width of the band around object edges where returns may go missing."""
    random_dropout_prob: float = 0.002
    """Chance that any pixel has no return."""


@dataclass
class SegmenterSimConfig:
    """Simulated 2D semantic segmenter (stands in for a real network)."""

    target_miou: float = 0.62
    """Per-frame 2D mIoU the simulator is calibrated to."""
    frame_miou_jitter: float = 0.05
    """Std of a slowly varying offset added to the target of each frame (spread between frames)."""
    frame_miou_period_s: float = 1.5
    """Shortest period of that offset's variation over time (the longest is three times this)."""
    work_width_px: int = 160
    """Noise and class scores are computed at this image width and upsampled (network output stride)."""
    boundary_bleed_px: float = 3.0
    """Std of the smear of labels across object boundaries, in pixels of a 640-pixel-wide image."""
    world_noise_scale_m: float = 0.4
    """Correlation length of the noise field anchored in world space (consistent across views)."""
    world_noise_weight: float = 0.8
    """Weight of the world-anchored noise field."""
    view_noise_weight: float = 0.7
    """Weight of a world-anchored noise field that also changes with the viewing direction."""
    view_noise_scale_rad: float = 0.5
    """Change of viewing direction over which that field decorrelates."""
    frame_noise_scale_frac: float = 0.15
    """Correlation length of the per-frame image-space noise field, as a fraction of the image width."""
    frame_noise_weight: float = 0.5
    """Weight of the per-frame image-space noise field."""
    frame_noise_period_s: float = 3.0
    """Time over which the per-frame noise field decorrelates."""
    other_class_weight: float = 0.2
    """Noise towards classes unlike the true one, relative to classes confusable with it."""
    absent_class_weight: float = 0.1
    """Noise towards classes absent from the view's ground truth, relative to present ones."""
    context_px: float = 24.0
    """Std of the neighbourhood whose classes a pixel can be mistaken for, in pixels of a 640-pixel-wide image."""
    context_weight: float = 1.0
    """Weight of the neighbourhood's classes in the noise."""
    instance_confusion_prob: float = 0.35
    """Fraction of object instances with a persistent pull towards one confusable class."""
    instance_confusion_max: float = 1.2
    """Largest persistent pull (in units of the noise field's std)."""
    instance_difficulty_std: float = 0.3
    """Log-std of a persistent per-instance multiplier of the error rate."""
    distance_ref_m: float = 1.5
    """Errors start growing with distance beyond this depth."""
    distance_gain_per_m: float = 0.35
    """Added error multiplier per metre beyond `distance_ref_m`."""
    grazing_gain: float = 2.0
    """Added error multiplier at grazing view angles, times (1 - |cos(incidence)|)^2."""
    border_gain: float = 1.0
    """Added error multiplier at the image border, decaying inwards."""
    border_width_frac: float = 0.06
    """Decay length of the border term, as a fraction of the image width."""
    partial_gain: float = 1.0
    """Added error multiplier on objects, times the fraction of their outline cut by the border or occluders."""
    small_object_gain: float = 1.0
    """Added error multiplier on objects whose visible area is below `small_object_area_frac`."""
    small_object_area_frac: float = 0.02
    """Visible image-area fraction under which objects count as small."""
    overconfidence: float = 1.3
    """Multiplier of the NLL-fitted inverse softmax temperature (> 1: sharper; 1.3: lowest ECE on rendered scenes)."""


@dataclass
class MaskSimConfig:
    """Simulated SAM-like class-agnostic mask generator."""

    min_area_fraction: float = 0.03
    """Masks smaller than this fraction of the image are dropped (DiscoNeRF §7.1)."""
    contained_fraction: float = 0.9
    """A mask with at least this fraction of its area inside a larger mask is dropped (§7.1)."""
    split_prob: float = 0.15
    """Probability that a mask large enough for two surviving parts is split in two by a 3D plane."""
    split_min_part_frac: float = 0.3
    """Smallest share of a split mask's area that either part gets."""
    merge_prob: float = 0.15
    """Probability that a pair of touching objects comes out as one mask."""
    touch_depth_m: float = 0.05
    """Neighbouring pixels of two objects touch when their depths differ by less than this (plus 2 % of depth)."""
    miss_prob: float = 0.3
    """Probability of missing an object at the drop threshold, falling to 0 at `miss_area_fraction`."""
    miss_area_fraction: float = 0.08
    """Image-area fraction above which objects are never missed."""
    stuff_masks: bool = True
    """Also make masks of floor and structure surfaces (one per instance, class, plane orientation and component)."""
    boundary_jitter_px: float = 2.0
    """Scale of the random in-and-out wobble of mask boundaries, in pixels of a 640-pixel-wide image."""


@dataclass
class SimConfig:
    """A synthetic scene, its camera path and its noise models."""

    camera: CameraConfig = field(default_factory=CameraConfig)
    scene: SceneConfig = field(default_factory=SceneConfig)
    trajectory: TrajectoryConfig = field(default_factory=TrajectoryConfig)
    depth_noise: DepthNoiseConfig = field(default_factory=DepthNoiseConfig)
    segmenter: SegmenterSimConfig = field(default_factory=SegmenterSimConfig)
    masks: MaskSimConfig = field(default_factory=MaskSimConfig)


# ----------------------------------------------------------------------------- loading
class ConfigError(ValueError):
    """A configuration value or key is wrong; the message names it."""


def config_from_dict(cls, values: dict, where: str = ""):
    """Build dataclass `cls` from a nested dict, refusing unknown keys and mistyped values."""
    if values is None:
        return cls()
    if not isinstance(values, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {type(values).__name__}")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(where + k for k in unknown)}; known: {sorted(names)}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        value, hint, key = values[f.name], hints[f.name], where + f.name
        if dataclasses.is_dataclass(hint):
            kwargs[f.name] = config_from_dict(hint, value, key + ".")
        else:
            kwargs[f.name] = _coerce(value, hint, key)
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    optional = hint == Optional[float] or hint == Optional[int] or hint == Optional[str]
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{key}: a value is required")
    base = hint.__args__[0] if optional else hint
    try:
        if base is bool:
            if not isinstance(value, bool):
                raise TypeError
            return value
        if base is int:
            if isinstance(value, bool) or float(value) != int(value):
                raise TypeError
            return int(value)
        if base is float:
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if base is str:
            return str(value)
        if base is tuple:
            return tuple(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: expected {getattr(base, '__name__', base)}, got {value!r}") from None
    return value


def config_to_dict(config) -> dict:
    """Plain nested dict of a config dataclass (for saving next to outputs)."""
    return dataclasses.asdict(config)


def config_dir() -> Path:
    """Folder holding mapping.yaml and classes.yaml, in a checkout, a pip install or a colcon install."""
    candidates = []
    if os.environ.get("SEMANTIC_MAPPING_CONFIG_DIR"):
        candidates.append(Path(os.environ["SEMANTIC_MAPPING_CONFIG_DIR"]))
    candidates.append(Path(__file__).resolve().parent.parent / "config")
    candidates.append(Path(sys.prefix) / "share" / "semantic_mapping" / "config")
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            candidates.append(Path(prefix) / "share" / "semantic_mapping" / "config")
    for path in candidates:
        if (path / "classes.yaml").is_file():
            return path
    raise FileNotFoundError(
        "semantic_mapping config folder not found (looked in: "
        + ", ".join(str(p) for p in candidates)
        + "); set SEMANTIC_MAPPING_CONFIG_DIR to the folder holding classes.yaml"
    )


def load_yaml(path: Path) -> dict:
    import yaml

    with open(path, encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
    return data or {}


def load_config(path: Optional[os.PathLike] = None, overrides: Optional[dict] = None) -> MapperConfig:
    """MapperConfig from a YAML file (default: the package's mapping.yaml), then `overrides`."""
    data = load_yaml(Path(path) if path else config_dir() / "mapping.yaml")
    data = data.get("semantic_mapping", data)
    if overrides:
        data = _merge(data, overrides)
    return config_from_dict(MapperConfig, data)


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out.get(k) or {}, v) if isinstance(v, dict) else v
    return out


def resolve_device(requested: str) -> str:
    """'cpu' or a CUDA device string; 'auto' and unavailable CUDA fall back to CPU with a log line."""
    import torch

    requested = (requested or "auto").lower()
    if requested == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda"):
        if torch.cuda.is_available():
            return requested if ":" in requested else "cuda:0"
        log.warning("device %r requested but CUDA is not available; using the CPU", requested)
        return "cpu"
    if requested != "cpu":
        raise ConfigError(f"fusion.device: expected 'auto', 'cpu' or 'cuda[:N]', got {requested!r}")
    return "cpu"
