import pytest
import torch
from torch import nn

from fedkd.models import MatmulConv1d, build_model, build_seeded_model, count_parameters, parse_spec


def test_matmul_conv_equals_torch_conv1d():
    torch.manual_seed(0)
    conv = MatmulConv1d(3, 5, kernel=5, stride=2, padding=2)
    ref = nn.Conv1d(3, 5, 5, stride=2, padding=2)
    with torch.no_grad():
        # MatmulConv1d weight is (C_in * k, C_out) in (channel, tap) order
        ref.weight.copy_(conv.weight.T.reshape(5, 3, 5))
        ref.bias.copy_(conv.bias)
    x = torch.randn(4, 3, 17)
    out = conv(x.transpose(1, 2)).transpose(1, 2)
    torch.testing.assert_close(out, ref(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(40,), (2, 40), (64,)])
@pytest.mark.parametrize("spec", ["cnn:width=8", "cnn:width=4,depth=1", "mlp:width=16,depth=1"])
def test_models_adapt_to_input_shape_and_classes(spec, shape):
    model = build_model(spec, shape, 7)
    assert model(torch.randn(3, *shape)).shape == (3, 7)


def test_teacher_much_larger_than_student():
    teacher = count_parameters(build_model("cnn:width=32", (40,), 10))
    student = count_parameters(build_model("cnn:width=16,depth=2", (40,), 10))
    assert teacher > 4 * student


def test_seeded_build_is_reproducible_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = build_seeded_model("cnn:width=4", (40,), 10, seed=7)
    after = torch.rand(1)
    b = build_seeded_model("cnn:width=4", (40,), 10, seed=7)
    assert torch.equal(before, after)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("resnet", "unknown model family 'resnet'; allowed: cnn, mlp"),
        ("cnn:widht=3", "unknown argument 'widht'"),
        ("cnn:width", "malformed model argument"),
    ],
)
def test_bad_specs(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_spec(spec)
