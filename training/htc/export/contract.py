"""What the contract fixes about the graphs: version, opset, file names and every graph's
signature, read from the table Go embeds (``infer/graphs.yaml``), so the exporter writes the
names and positions the runtime checks and reads."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Tuple

import onnx
import yaml

from .. import dcn

CONTRACT = "htcstream-bundle/2"
OPSET = 16
GRAPH_FILES = {"backbone": "backbone.onnx", "mask_heads": "mask_heads.onnx"}
# contract 1's single box graph: only read back (``--from-bundle``), never written
V1_BOX_GRAPH = "bbox_heads.onnx"
LEVEL_STRIDES = (4, 8, 16, 32, 64)

TABLE = Path(__file__).resolve().parents[3] / "infer" / "graphs.yaml"
_TYPES = {"float32": onnx.TensorProto.FLOAT, "int64": onnx.TensorProto.INT64}

Port = Tuple[str, int, int]  # name, rank, ONNX element type


def stage_file(t: int) -> str:
    """The box graph of stage t (0-based)."""
    return f"bbox_stage{t + 1}.onnx"


def _read_table(path: Path = TABLE) -> Dict[str, Tuple[List[Port], List[Port]]]:
    table = yaml.safe_load(path.read_text(encoding="utf-8"))
    return {kind: tuple([(str(n), int(r), _TYPES[t]) for n, r, t in sig[side]] for side in ("inputs", "outputs"))
            for kind, sig in table.items()}


# kind (backbone, bbox_stage, mask_heads) -> (inputs, outputs), each [(name, rank, element type)] in order
SIGNATURES = _read_table()


def names(kind: str, side: str = "outputs") -> List[str]:
    """The input or output names of a graph kind, in the contract's order."""
    return [n for n, _, _ in SIGNATURES[kind][0 if side == "inputs" else 1]]


def check_graph(path: Path, kind: str) -> None:
    """onnx.checker plus the contract's names, order, ranks and element types."""
    model = onnx.load(str(path))
    opset = OPSET
    if any(n.op_type == "DeformConv" for n in model.graph.node):
        dcn.check_lifted(path)  # python3-onnx 1.12 knows no opset 19
        opset = dcn.DEFORM_OPSET
    else:
        onnx.checker.check_model(model)
    if not any(o.domain in ("", "ai.onnx") and o.version == opset for o in model.opset_import):
        raise ValueError(f"{path}: opset {[(o.domain, o.version) for o in model.opset_import]}, want {opset}")
    want_in, want_out = SIGNATURES[kind]
    init = {i.name for i in model.graph.initializer}
    got_in = [i for i in model.graph.input if i.name not in init]
    for side, got, want in (("inputs", got_in, want_in), ("outputs", list(model.graph.output), want_out)):
        got_names = [g.name for g in got]
        if got_names != [w[0] for w in want]:
            raise ValueError(f"{path}: {side} {got_names}, the contract has {[w[0] for w in want]}")
        for g, (name, rank, dtype) in zip(got, want):
            t = g.type.tensor_type
            if t.elem_type != dtype or len(t.shape.dim) != rank:
                raise ValueError(f"{path}: {name} has element type {t.elem_type} and rank {len(t.shape.dim)}, "
                                 f"want {dtype} and {rank}")
