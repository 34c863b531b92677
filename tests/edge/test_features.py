import numpy as np

from edge.backends.ort_backend import OrtBackend
from edge.backends.torch_backend import TorchBackend
from edge.extract import extract_features
from edge.features import build_extractor, channel_average_matrix
from edge.onnx_graph import export_onnx_bytes
from edge.preprocess import list_images


def test_patch_features_shape_and_onnx_parity_on_real_images(bottle):
    extractor, info = build_extractor(input_size=224)  # the paper's stride 8 + 16
    assert info.layers == ("blocks.2", "blocks.4") and info.channels == (40, 112)
    onnx_be = OrtBackend(export_onnx_bytes(extractor, 224))
    paths = list_images(bottle / "test/broken_large")[:3]
    f_onnx, _, _ = extract_features(onnx_be, paths, 224, info.mean, info.std, progress=False)
    f_torch, _, _ = extract_features(TorchBackend(extractor, "cpu"), paths, 224, info.mean, info.std, progress=False)
    assert f_onnx.shape == (3, 152, 28, 28)
    assert np.abs(f_onnx - f_torch).max() < 1e-3


def test_lite0_preset_uses_stride_4_8_and_16_averaged_to_96_dims():
    from edge.backbone import preset

    p = preset("efficientnet_lite0")
    extractor, info = build_extractor(input_size=p.input_size, strides=p.strides, feature_dim=p.feature_dim)
    assert info.layers == ("blocks.1", "blocks.2", "blocks.4") and info.channels == (24, 40, 112)
    x = np.zeros((1, 3, p.input_size, p.input_size), np.float32)
    assert TorchBackend(extractor, "cpu")(x).shape == (1, 96, p.input_size // 4, p.input_size // 4)


def test_feature_dim_reduction_averages_adjacent_channels():
    m = channel_average_matrix(6, 3).numpy()
    np.testing.assert_allclose(m @ np.arange(6.0), [0.5, 2.5, 4.5])
    extractor, _ = build_extractor(feature_dim=64)
    assert extractor.feature_dim == 64
