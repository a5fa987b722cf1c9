from __future__ import annotations

import pytest
import torch

from core.features import FeatureParams, efficientat_32k
from core.networks import ARCHITECTURES, ResNet34, build, count_parameters

DEVICE_CLASS = sorted(a for a in ARCHITECTURES if a.startswith("gwcnn"))


def _params(architecture: str) -> FeatureParams:
    return efficientat_32k() if architecture.startswith("mn04") else FeatureParams()


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_registered_networks_give_one_logit_per_window(architecture):
    params = _params(architecture)
    net = build(architecture, params).eval()
    x = torch.randn(5, 1, params.n_mels, params.frames_per_window) * 10 - 40
    with torch.inference_mode():
        out = net(x)
    assert out.shape == (5,)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("architecture", DEVICE_CLASS)
def test_registered_networks_stay_small(architecture):
    # The speed budget (<= 1 ms CPU per second of audio) only holds for networks of this size.
    assert 1_000 < count_parameters(build(architecture, FeatureParams())) < 60_000


@pytest.mark.parametrize("architecture", ["mn04-gun", "mn04-ensemble"])
def test_server_networks_fit_the_weights_budget(architecture):
    # Server budget: <= 10 ms CPU per second of audio and <= 5 MB per weights file (the ensemble ships float16).
    n = count_parameters(build(architecture, efficientat_32k()))
    assert 500_000 < n < 1_300_000


def test_network_accepts_other_feature_sizes():
    params = FeatureParams(n_mels=64, hop_length=160)
    out = build("gwcnn-1", params).eval()(torch.zeros(2, 1, 64, params.frames_per_window))
    assert out.shape == (2,)


def test_unknown_architecture_is_a_key_error():
    with pytest.raises(KeyError, match="unknown architecture"):
        build("gwcnn-999", FeatureParams())


def test_window_scores_do_not_depend_on_batch_neighbours():
    params = FeatureParams()
    net = build("gwcnn-1", params).eval()
    x = torch.randn(4, 1, params.n_mels, params.frames_per_window) * 10 - 40
    with torch.inference_mode():
        torch.testing.assert_close(net(x)[1:2], net(x[1:2]))


def test_seed_style_resnet34_shape_and_size():
    net = ResNet34().eval()
    # ResNet-34 with a one-logit head: 21.3 M parameters, as in He et al. minus the 1000-class layer.
    assert 21_000_000 < count_parameters(net) < 21_500_000
    with torch.inference_mode():
        assert net(torch.zeros(2, 3, 224, 224)).shape == (2,)
