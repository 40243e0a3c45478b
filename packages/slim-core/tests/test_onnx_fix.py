import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _model():
    """x [N, 6] reshaped to concat(shape(x)[0] as a scalar, 2 as a scalar, [3]): what paddle2onnx 2.1 writes for
    PP-OCR's reshapes (PIR builtin.combine of scalars)."""
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["n"], axis=0),  # rank 0
        helper.make_node("Concat", ["n", "two", "three"], ["target"], axis=0, name="Concat.0"),
        helper.make_node("Reshape", ["x", "target"], ["y"]),
    ]
    inits = [
        numpy_helper.from_array(np.array(0, "int64"), "zero"),
        numpy_helper.from_array(np.array(2, "int64"), "two"),  # rank 0
        numpy_helper.from_array(np.array([3], "int64"), "three"),  # rank 1
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_fix_concat_ranks_makes_mixed_rank_concat_loadable(tmp_path):
    from slim_core.runtime.onnx_fix import fix_concat_ranks

    model = _model()
    onnx.save(model, str(tmp_path / "bad.onnx"))
    with pytest.raises(Exception, match="Concat"):  # "same rank" or "axis must be in [-rank, rank-1]"
        ort.InferenceSession(str(tmp_path / "bad.onnx"), providers=["CPUExecutionProvider"])
    assert fix_concat_ranks(model) == 1
    assert fix_concat_ranks(model) == 0  # idempotent
    onnx.save(model, str(tmp_path / "fixed.onnx"))
    x = np.arange(24, dtype="float32").reshape(4, 6)
    y = ort.InferenceSession(str(tmp_path / "fixed.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_array_equal(y, x.reshape(4, 2, 3))
