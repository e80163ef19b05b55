"""The NiN architecture: the author's widths give exactly the paper's parameter counts."""

import pytest
import torch
from torch import nn

from nin_lightning.models import NiN


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize(
    ("preset", "classes", "channels", "size", "expected"),
    [
        ("cifar", 10, 3, 32, 966_986),
        ("cifar", 100, 3, 32, 984_356),
        ("svhn", 10, 3, 32, 1_986_026),
        ("mnist", 10, 1, 28, 349_674),
    ],
)
def test_paper_parameter_counts_and_shapes(preset, classes, channels, size, expected):
    net = NiN(classes, channels, preset, batch_norm=False)
    assert n_params(net) == expected
    assert net(torch.randn(2, channels, size, size)).shape == (2, classes)


def test_digits_input_8x8_works_with_mnist_preset():
    assert NiN(10, 1, "mnist")(torch.randn(3, 1, 8, 8)).shape == (3, 10)


def test_width_multiplies_hidden_widths_not_classes():
    half = NiN(10, 3, "cifar", width=0.5, batch_norm=False)
    convs = [m for m in half.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [96, 80, 48, 96, 96, 96, 96, 96, 10]
    assert n_params(half) < 966_986 / 3


def test_structure_pool_dropout_gap():
    net = NiN(10, 3, "cifar", dropout=0.3, batch_norm=True)
    kinds = [type(m).__name__ for m in net.features]
    assert kinds == ["Sequential", "MaxPool2d", "Dropout", "Sequential", "MaxPool2d", "Dropout", "Sequential"]
    assert all(d.p == 0.3 for d in net.features if isinstance(d, nn.Dropout))
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == 9
    pool = net.features[1]
    assert pool.kernel_size == 3 and pool.stride == 2
    assert isinstance(net.pool, nn.AdaptiveAvgPool2d)


def test_paper_init_is_normal_005():
    torch.manual_seed(0)
    net = NiN(10, 3, "cifar", init="normal", batch_norm=False)
    w = net.features[3][0].weight  # 5x5 conv of block 2: 460,800 weights
    assert abs(w.std().item() - 0.05) < 0.001
    assert abs(w.mean().item()) < 0.001


def test_final_relu_knob():
    with_relu = NiN(10, 1, "mnist", final_relu=True)
    without = NiN(10, 1, "mnist", final_relu=False)
    assert isinstance(with_relu.features[-1][-1], nn.ReLU)
    assert not isinstance(without.features[-1][-1], nn.ReLU)


@pytest.mark.parametrize(("classes", "top5"), [(10, False), (100, True)])
def test_top5_only_with_more_than_ten_classes(classes, top5):
    from nin_lightning.module import NiNClassifier

    module = NiNClassifier(classes, 3, "cifar", width=0.1, label_smoothing=0.1)
    top5_metrics = {k for k in module.metrics if k.endswith("_acc5")}
    assert top5_metrics == ({"train_acc5", "val_acc5", "test_acc5"} if top5 else set())
    logits, labels = torch.randn(8, classes), torch.randint(0, classes, (8,))
    assert torch.isclose(module.loss(logits, labels),
                         nn.functional.cross_entropy(logits, labels, label_smoothing=0.1))
