"""Export a trained HTC checkpoint as a model bundle (docs/model-bundle.md, ``htcstream-bundle/2``).

    cd training && python3 -m htc.export --checkpoint ../work_dirs/htc_tiny/latest.pth \\
        --out ../work_dirs/bundle [--config CFG] [--name NAME] [--fixture-image IMG] \\
        [--tta-scales 320x320,416x416] [--no-fixture]
    cd training && python3 -m htc.export --from-bundle OLD_BUNDLE --config CFG --out NEW_BUNDLE

Writes ``manifest.yaml`` (:mod:`.manifest`), ``backbone.onnx`` (:mod:`.backbone`), one
``bbox_stageN.onnx`` per box stage (:mod:`.box_stages`: RoIAlign is the runtime's) and
``mask_heads.onnx`` (:mod:`.mask_heads`), traced by :mod:`.graphs` (opset 16, dynamic batch,
size and RoI axes) and each checked with onnx.checker and against the contract's signatures
(:mod:`.contract`, the table Go reads too); then the reference fixture in ``fixture/``
(:mod:`.fixture`): the input image, and per TTA plan (``single``: the test scale; ``tta``:
2 scales x flip; ``tta_probs``: the same views with Go's other stage ensemble, the mean of
probabilities with unequal stage weights) the shared proposals and the detections PyTorch
produced (:mod:`htc.model.tta`, whose single view is ``HTC.predict``).

Without ``--config`` the config saved in the checkpoint is used. Class names come from the
checkpoint's ``meta`` (or the config's annotation files).

A released mmdetection HTC checkpoint is read directly (its architecture from its weights'
shapes, ``--config``/``--set`` on top; :mod:`htc.mmdet_checkpoint`); it comes without data, so
its bundle has a fixture only with ``--fixture-image``.

``--from-bundle`` (:mod:`.from_bundle`) exports a bundle's head graphs again from the weights
stored in its own graphs, with no checkpoint: the way from a contract-1 bundle to this contract.
"""

from .backbone import BackboneGraph
from .box_stages import (BoxStageGraph, StagesBoxCascade, channels_first_columns, channels_last_columns,
                         pooled_channels_last)
from .cli import build_parser, class_names, export_bundle, load_checkpoint, main
from .contract import CONTRACT, GRAPH_FILES, OPSET, SIGNATURES, check_graph, stage_file
from .fixture import (default_tta_scales, first_val_image, fixture_stage_weights, load_rgb, parse_scales,
                      write_fixture)
from .from_bundle import heads_state_from_bundle, rebuild_bundle_heads
from .graphs import GRAPH_GROUPS, export_graphs, head_graphs, trace_size
from .manifest import build_manifest, dump_yaml, graphs_section, long_short
from .mask_heads import MaskHeadsGraph, pool_by_level
