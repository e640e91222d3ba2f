"""classify.models: offline Lite weights, local weights and Hugging Face folders, and the errors for the rest."""
import pytest
import torch

from classify import ClassifyError
from classify import models


def test_offline_lite_weights_are_loaded():
    model, spec, _ = models.create("efficientnet_lite0", num_classes=4)
    packaged = models._offline_state_dict("efficientnet_lite0")
    assert torch.equal(model.backbone.conv_stem.weight, packaged["_conv_stem.weight"])
    assert spec.image_size == 224 and spec.mean == (0.5, 0.5, 0.5)
    assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 4)


def test_pretrained_backbone_recognises_a_food_photo(food_dev):
    # The packaged weights must be real ImageNet weights: a burrito photo should land on ImageNet's 965 "burrito"
    # far more often than chance.
    from classify import data as D
    import timm
    backbone = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    models._load_in_order(backbone, models._offline_state_dict("efficientnet_lite0"))
    paths = sorted((food_dev / "valid" / "breakfast_burrito").glob("*.jpg"))[:12]
    batch = torch.stack([torch.from_numpy(D.decode(p, 256).copy()).permute(2, 0, 1) for p in paths])
    x = D.normalize(D.center_crop(batch, 224), (0.5,) * 3, (0.5,) * 3)
    with torch.inference_mode():
        hits = (backbone.eval()(x).argmax(-1) == 965).sum().item()
    assert hits >= 3


def test_heads():
    linear, _, _ = models.create("efficientnet_lite0", 3, pretrained=False)
    mlp, _, _ = models.create("efficientnet_lite0", 3, head="mlp", pretrained=False)
    assert isinstance(linear.head[-1], torch.nn.Linear) and len(mlp.head) == 4
    with pytest.raises(ClassifyError, match="unknown head"):
        models.create("efficientnet_lite0", 3, head="transformer", pretrained=False)


def test_trunk_and_tail_compose_to_backbone():
    model, _, _ = models.create("efficientnet_lite0", 3)
    backbone = model.backbone.eval()
    trunk, tail = models.trunk_and_tail(backbone, models.split_points(backbone) - 2)
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        assert torch.allclose(tail(trunk(x)), backbone(x), atol=1e-5)


def test_unknown_model_name():
    with pytest.raises(ClassifyError, match="unknown model 'no_such_net'"):
        models.create("no_such_net", 3)
    with pytest.raises(ClassifyError, match="unknown torchvision model"):
        models.create("tv:no_such_net", 3)


@pytest.mark.parametrize("name", ["resnet18", "tv:resnet18", "hf:microsoft/resnet-50"])
def test_unreachable_hub_names_the_offline_choices(name, monkeypatch, tmp_path, capfd):
    # This machine has no route to the hubs, so these are real failed downloads. Empty caches make sure
    # nothing is found locally instead.
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_DOWNLOAD_TIMEOUT", "5")
    with pytest.raises(ClassifyError, match="efficientnet_lite0"):
        models.create(name, 3)
    # at once: not after huggingface_hub's five retries with backoff (~50 s)
    assert "Retrying" not in capfd.readouterr().err


def test_local_weights_file(tmp_path):
    from safetensors.torch import save_file
    source, _, _ = models.create("efficientnet_lite0", 3, pretrained=False)
    torch.nn.init.constant_(source.backbone.conv_stem.weight, 0.25)
    save_file({k: v.contiguous() for k, v in source.backbone.state_dict().items()}, str(tmp_path / "b.safetensors"))
    torch.save(source.state_dict(), tmp_path / "whole.pt")
    for path in (tmp_path / "b.safetensors", tmp_path / "whole.pt"):
        model, _, _ = models.create("efficientnet_lite0", 3, weights=path)
        assert torch.all(model.backbone.conv_stem.weight == 0.25)
    with pytest.raises(ClassifyError, match="not found"):
        models.create("efficientnet_lite0", 3, weights=tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ClassifyError, match="cannot read weights"):
        models.create("efficientnet_lite0", 3, weights=tmp_path / "junk.pt")


def test_hugging_face_model_from_a_local_folder(tmp_path):
    # The real transformers loading path, on a tiny checkpoint saved locally (the hub is unreachable here).
    from transformers import ResNetConfig, ResNetForImageClassification
    config = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=1000)
    ResNetForImageClassification(config).save_pretrained(tmp_path / "tiny-resnet")
    model, spec, extra = models.create(f"hf:{tmp_path / 'tiny-resnet'}", 5)
    assert model.num_features == 16
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 5)
    rebuilt, _, _ = models.create(f"hf:{tmp_path / 'gone'}", 5, pretrained=False, hf_config=extra["hf_config"])
    rebuilt.load_state_dict(model.state_dict())
    model.eval(), rebuilt.eval()
    x = torch.randn(1, 3, 64, 64)
    assert torch.allclose(model(x), rebuilt(x))


@pytest.mark.skipif(models.hub_resolves(), reason="huggingface.co resolves here: the no-network path cannot be exercised")
def test_hub_cache_still_loads_with_no_network(monkeypatch, tmp_path):
    # Going offline when the hub does not resolve must not lose weights already in the Hugging Face cache.
    import timm
    from huggingface_hub import constants
    from safetensors.torch import save_file
    reference = timm.create_model("resnet18", pretrained=False)
    torch.nn.init.constant_(reference.conv1.weight, 0.125)
    repo = tmp_path / "hub" / "models--timm--resnet18.a1_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    (repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
    save_file(reference.state_dict(), str(repo / "snapshots" / ("0" * 40) / "model.safetensors"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    model, _, _ = models.create("resnet18", 3)
    assert torch.all(model.backbone.conv1.weight == 0.125)
    assert constants.HF_HUB_OFFLINE is False  # offline only for that call


def test_backbones_side_by_side():
    # Features of each branch, concatenated, on one input: a branch with another normalization (torchvision's
    # ImageNet mean/std) gets the input mapped into its own.
    model, spec, extra = models.create("efficientnet_lite0+efficientnet_lite1", 4)
    lite0, _, _ = models.create("efficientnet_lite0", 4)
    model.eval(), lite0.eval()  # (in training mode a forward pass moves BatchNorm's statistics)
    assert spec.image_size == 240 and spec.mean == (0.5, 0.5, 0.5) and extra == {}
    assert model.num_features == 2 * 1280 and model(torch.zeros(2, 3, 64, 64)).shape == (2, 4)
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        features = model.backbone.eval()(x)
        assert torch.allclose(features[:, :1280], lite0.backbone.eval()(x), atol=1e-5)
    mixed, mixed_spec, _ = models.create("efficientnet_lite0+tv:resnet18", 3, pretrained=False)
    resnet = mixed.backbone.branches[1].eval()
    pixels = torch.rand(2, 3, 64, 64)
    imagenet = (pixels - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.inference_mode():
        given = (pixels - 0.5) / 0.5  # the input in the first branch's normalization
        assert torch.allclose(mixed.backbone.eval()(given)[:, 1280:], resnet(imagenet), atol=1e-4)
    # the state dict is the branches' own: a bundle saved from one loads into another built from the same name
    again, _, _ = models.create("efficientnet_lite0+tv:resnet18", 3, pretrained=False)
    again.load_state_dict(mixed.state_dict())
    for name in ("efficientnet_lite0+", "efficientnet_lite0+hf:microsoft/resnet-50"):
        with pytest.raises(ClassifyError, match="side by side"):
            models.create(name, 3, pretrained=False)
