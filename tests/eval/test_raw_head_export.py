"""``trtqat export --head raw`` records the anchors and strides ``trtqat eval`` needs to decode its boxes."""
import onnx
from click.testing import CliRunner

from trtqat.cli import main
from trtqat.models.detect_head import raw_head_from_metadata


def test_raw_head_export_carries_anchors_and_strides(yolo_checkpoint, tmp_path):
    ckpt, repo = yolo_checkpoint("yolov5")
    onnx_path = tmp_path / "raw.onnx"
    res = CliRunner().invoke(main, ["export", str(ckpt), "--repo", str(repo), "--no-quant", "--size", "64",
                                    "--head", "raw", "--no-verify", "--save", str(onnx_path)])
    assert res.exit_code == 0, res.output
    meta = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    head = raw_head_from_metadata(meta, str(onnx_path))
    assert head.strides == (8.0, 16.0, 32.0)
    # the fixture's anchors in input pixels (the yolov5s defaults)
    assert head.anchors[0] == ((10.0, 13.0), (16.0, 30.0), (33.0, 23.0))
    assert head.anchors[2][2] == (373.0, 326.0)
