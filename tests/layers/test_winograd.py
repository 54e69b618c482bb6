"""winograd_conv3x3: per-sample 3x3 convolutions by F(2x2, 3x3) and F(4x4, 3x3) equal
F.conv2d's, forward and gradients, in float64 exactly and in float32 to rounding."""
import pytest
import torch
import torch.nn.functional as F

from condseg.layers import winograd
from condseg.layers.winograd import TILE_SIZES, winograd_conv3x3, winograd_matrices


def per_sample_conv(x, w, padding):
    return torch.cat([F.conv2d(x[b : b + 1], w[b], padding=padding) for b in range(x.shape[0])])


@pytest.mark.parametrize("tile", TILE_SIZES)
@pytest.mark.parametrize(
    "batch,c_in,c_out,h,w,padding",
    [(2, 3, 5, 7, 9, 1), (3, 4, 2, 8, 8, 0), (1, 2, 3, 1, 1, 1), (2, 3, 3, 5, 6, (2, 1)), (2, 6, 4, 13, 4, 1)],
)
def test_equals_per_sample_conv2d_in_float64(tile, batch, c_in, c_out, h, w, padding):
    torch.manual_seed(tile + h)
    x = torch.randn(batch, c_in, h, w, dtype=torch.float64, requires_grad=True)
    wt = torch.randn(batch, c_out, c_in, 3, 3, dtype=torch.float64, requires_grad=True)
    out, expected = winograd_conv3x3(x, wt, padding, tile), per_sample_conv(x, wt, padding)
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=0)
    g = torch.randn_like(expected)
    for a, b in zip(torch.autograd.grad((out * g).sum(), (x, wt)), torch.autograd.grad((expected * g).sum(), (x, wt))):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


@pytest.mark.parametrize("tile", TILE_SIZES)
def test_gradcheck(tile):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    wt = torch.randn(2, 4, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: winograd_conv3x3(a, b, 1, tile), (x, wt))


def test_chunks_of_samples_give_the_same_result(monkeypatch):
    torch.manual_seed(0)
    x = torch.randn(5, 3, 9, 7, dtype=torch.float64, requires_grad=True)
    wt = torch.randn(5, 4, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    g = torch.randn(5, 4, 9, 7, dtype=torch.float64)

    def run():
        out = winograd_conv3x3(x, wt, 1)
        return (out, *torch.autograd.grad((out * g).sum(), (x, wt)))

    assert winograd._chunk_size(x, (1, 1), 4) >= 5  # all at once by default here
    whole = run()
    monkeypatch.setattr(winograd, "CHUNK_BYTES", 1)  # one sample at a time
    assert winograd._chunk_size(x, (1, 1), 4) == 1
    for a, b in zip(run(), whole):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


@pytest.mark.parametrize("tile,limit", [(2, 2e-6), (4, 2e-5)])
def test_float32_error_is_that_of_a_convolution(tile, limit):
    """Against float64, relative to the largest output: F(2x2, 3x3) below 2e-6 (a direct
    float32 convolution is about 2e-6 here), F(4x4, 3x3) below 2e-5 (its coefficients
    reach 8), the ODConv fixtures' tolerance being 1e-5 of max(1, max |out|)."""
    torch.manual_seed(0)
    x = torch.randn(2, 128, 20, 24)
    wt = torch.randn(2, 128, 128, 3, 3) * (2 / (128 * 9)) ** 0.5
    expected = per_sample_conv(x.double(), wt.double(), 1)
    err = (winograd_conv3x3(x, wt, 1, tile).double() - expected).abs().max() / expected.abs().max()
    assert err < limit


def test_matrices_are_the_minimal_filtering_identity():
    """1-D: A^T [(G g) * (B^T d)] is the correlation of d (length m + 2) with g (length 3)."""
    for m in TILE_SIZES:
        kb, kg, ka = winograd_matrices(m, torch.float64)
        a = m + 2
        assert kb.shape == (a * a, a * a) and kg.shape == (a * a, 9) and ka.shape == (m * m, a * a)
        d, g = torch.randn(a, a, dtype=torch.float64), torch.randn(3, 3, dtype=torch.float64)
        y = (ka @ ((kg @ g.reshape(9)) * (kb @ d.reshape(-1)))).view(m, m)
        torch.testing.assert_close(y, F.conv2d(d[None, None], g[None, None])[0, 0], atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="tile size must be one of"):
        winograd_matrices(3)


def test_bad_weight_and_double_backward_are_refused():
    x = torch.randn(2, 3, 5, 5, requires_grad=True)
    with pytest.raises(ValueError, match=r"expected weight \[B, C_out, 3, 3, 3\] with B = 2"):
        winograd_conv3x3(x, torch.randn(4, 3, 3, 3))
    wt = torch.randn(2, 4, 3, 3, 3, requires_grad=True)
    g = torch.randn(2, 4, 5, 5, requires_grad=True)
    (gx,) = torch.autograd.grad((winograd_conv3x3(x, wt) * g).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="trying to differentiate twice"):
        gx.sum().backward()
