"""winograd_conv3x3: per-sample 3x3 convolutions by F(2x2, 3x3), F(3x3, 3x3) and F(4x4, 3x3)
equal F.conv2d's, forward and gradients, in float64 exactly, and in float32 within a bound
of a direct convolution's error."""
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


# ResNet-50 stage shapes of an 800x1216 input (one sample), where ODConv's auto may pick Winograd
STAGE_SHAPES = {"res2": (64, 200, 304), "res3": (128, 100, 152), "res4": (256, 50, 76), "res5": (512, 25, 38)}


def float32_errors(c, h, w, tile, relu):
    """Largest error of winograd_conv3x3 and of a direct convolution in float32 against
    float64, relative to the largest output, for one per-sample kernel of ODConv's scale."""
    g = torch.Generator().manual_seed(c)
    x = torch.randn(1, c, h, w, generator=g)
    x = x.relu() if relu else x
    wt = torch.randn(1, c, c, 3, 3, generator=g) * (2 / (9 * c)) ** 0.5
    ref = F.conv2d(x.double(), wt[0].double(), padding=1)
    scale = ref.abs().max()
    direct = (F.conv2d(x, wt[0], padding=1).double() - ref).abs().max() / scale
    return float((winograd_conv3x3(x, wt, 1, tile).double() - ref).abs().max() / scale), float(direct)


@pytest.mark.parametrize("relu", [False, True], ids=["randn", "relu"])
@pytest.mark.parametrize("stage", list(STAGE_SHAPES))
def test_default_tile_float32_error_is_within_10x_a_direct_convolutions(stage, relu):
    """The tile ODConv's "winograd" runs, F(4x4, 3x3) with the points of POINTS: its
    float32 error within 10x a direct convolution's at the ResNet-50 stage shapes (with
    Lavin's points 25-39x)."""
    from condseg.layers.odconv import WINOGRAD_TILE

    ours, direct = float32_errors(*STAGE_SHAPES[stage], WINOGRAD_TILE, relu)
    assert ours <= 10 * direct, (ours, direct)


@pytest.mark.parametrize("tile,times", [(2, 3), (3, 8)])
def test_more_accurate_tiles_float32_error(tile, times):
    """F(2x2, 3x3) within 3x a direct convolution's error, F(3x3, 3x3) within 8x (at res4)."""
    ours, direct = float32_errors(*STAGE_SHAPES["res4"], tile, relu=False)
    assert ours <= times * direct, (ours, direct)


def test_toom_cook_builds_lavins_matrices_up_to_a_diagonal_scaling():
    """With Lavin's points 0, 1, -1, 2, -2 the construction gives Lavin & Gray's F(4, 3)
    transforms, up to the freedom of scaling G's rows by d and B^T's rows by 1 / d."""
    bt, g, at = winograd.toom_cook((0, 1, -1, 2, -2), 4)
    lavin_g = torch.tensor([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                            [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], dtype=torch.float64)
    d = (lavin_g * g).sum(1) / (g * g).sum(1)  # least squares; exact if the rows are parallel
    torch.testing.assert_close(g * d[:, None], lavin_g, atol=1e-15, rtol=0)
    lavin_bt = torch.tensor([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                             [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], dtype=torch.float64)
    torch.testing.assert_close(bt / d[:, None], lavin_bt, atol=1e-12, rtol=0)
    lavin_at = torch.tensor([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
                            dtype=torch.float64)
    torch.testing.assert_close(at, lavin_at, atol=1e-15, rtol=0)
    with pytest.raises(ValueError, match="needs 5 distinct finite points"):
        winograd.toom_cook((0, 1, 1, 2, -2), 4)


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
        winograd_matrices(5)


def test_bad_weight_and_double_backward_are_refused():
    x = torch.randn(2, 3, 5, 5, requires_grad=True)
    with pytest.raises(ValueError, match=r"expected weight \[B, C_out, 3, 3, 3\] with B = 2"):
        winograd_conv3x3(x, torch.randn(4, 3, 3, 3))
    wt = torch.randn(2, 4, 3, 3, 3, requires_grad=True)
    g = torch.randn(2, 4, 5, 5, requires_grad=True)
    (gx,) = torch.autograd.grad((winograd_conv3x3(x, wt) * g).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="trying to differentiate twice"):
        gx.sum().backward()
