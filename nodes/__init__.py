"""Diorama's ComfyUI nodes (thin V3 wrappers over ops/ and loaders/)."""
from .assets import NODES as ASSET_NODES
from .bifrost import ApplyControlNets, BifrostDepthFuse, BifrostHints, PlacementDepthRange
from .composite import CompositeSample, CompositeWindowNode, CropToWindow
from .depth import DepthEstimate, DepthFromImage, DepthModelLoader
from .geometry import DepthAwarePaste, DepthFuse, DetailMap, ShapeMask
from .identity import DinoV2Loader, IdentityAdapterLoader, IdentityEncode
from .keypoints import NODES as KEYPOINT_NODES
from .locate import LocatePlacement
from .neural_assets import NeuralAssetPose
from .neural_assets_loaders import DinoLoader, NeuralAssetsAdapterLoader
from .person import NODES as PERSON_NODES
from .placement import PlacementFromBox, PlacementFromMask
from .save import SaveImageAtomic
from .scene import BundledScene
from .small_compositor import SmallCompositorConditioning
from .small_neural_assets import SmallNeuralAssetsConditioning
from .small_models import NODES as SMALL_MODEL_NODES
from .vlm import VLMLoader

NODES = [
    BundledScene,
    DepthModelLoader,
    DepthEstimate,
    DepthFromImage,
    PlacementFromBox,
    PlacementFromMask,
    DepthFuse,
    ShapeMask,
    DetailMap,
    DepthAwarePaste,
    CompositeWindowNode,
    CropToWindow,
    CompositeSample,
    DinoV2Loader,
    IdentityAdapterLoader,
    IdentityEncode,
    PlacementDepthRange,
    BifrostDepthFuse,
    BifrostHints,
    ApplyControlNets,
    DinoLoader,
    NeuralAssetsAdapterLoader,
    *ASSET_NODES,
    NeuralAssetPose,
    *KEYPOINT_NODES,
    *PERSON_NODES,
    VLMLoader,
    LocatePlacement,
    SaveImageAtomic,
    *SMALL_MODEL_NODES,
    SmallCompositorConditioning,
    SmallNeuralAssetsConditioning,
]
