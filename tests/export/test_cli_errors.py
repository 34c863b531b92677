"""export's option errors: one line on stderr, exit code 2, before anything is built (the real CLI)."""

from __future__ import annotations

from ..cli_helpers import one_line_error, run_cli


def cli(*args):
    return run_cli("export", *args)


def test_fp16_is_refused_for_onnx_like_int8(small_model):
    one_line_error(cli("--model", small_model, "--format", "onnx", "--fp16"), "--fp16 is for --format tensorrt")
    one_line_error(cli("--model", small_model, "--format", "onnx", "--int8"), "--int8 is for --format tensorrt")


def test_a_missing_images_folder_is_named_as_the_one_given(small_model, tmp_path):
    missing = tmp_path / "nonexist"
    r = cli("--model", small_model, "--format", "onnx", "--images", missing)
    one_line_error(r, f"--images {missing} does not exist or is not a folder")
    assert "calibration folder" not in r.stderr and "is gone" not in r.stderr
    one_line_error(cli("--model", small_model, "--format", "tensorrt", "--int8", "--calibration-images", missing),
                   f"--calibration-images {missing} does not exist")
