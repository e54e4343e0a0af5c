"""completion stage: SSR-2D semantic scene completion.

`renderer.render_volume` raycasts a dense TSDF volume with colour and semantics into images,
differentiably (§3.3); `network.CompletionNetwork` is the two-encoder, three-decoder 3D U-Net (§3.2),
saved and loaded with `save_completion_model` / `load_completion_model`; `infer.complete_chunk` completes
one chunk of a map, and `live.LiveCompletion` does it in the running map, in a worker thread.
"""
