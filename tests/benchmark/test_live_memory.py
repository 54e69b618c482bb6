"""condseg.benchmark.live_memory: the peak of the tensors alive at once, not of every tensor
ever made, and none of what existed before or of views."""
import torch

from condseg.benchmark.live_memory import live_tensor_peak

MB = 1 << 20


def test_peak_counts_what_is_alive_at_once():
    weight = torch.randn(1024, 256)  # 1 MiB that exists before: never counted, nor its views

    def run():
        view = weight.view(-1)[: 1024]
        a = torch.empty(MB // 4)  # 1 MiB
        b = a * 2  # 2 MiB alive
        del a
        c = b + 1  # 2 MiB alive again, never 3
        del b
        c.mul_(3)  # in place: nothing new
        torch.add(c, 1, out=c)  # out=: nothing new
        return view, c

    (view, c), peak = live_tensor_peak(run)
    assert peak == 2 * MB
    assert view.shape == (1024,) and c.numel() == MB // 4


def test_a_freed_tensor_makes_room_and_the_result_stays_counted():
    def run():
        for _ in range(5):
            t = torch.zeros(MB // 4)  # each freed before the next one is made (the name is rebound after)
            del t
        return torch.ones(MB // 2)  # 2 MiB

    out, peak = live_tensor_peak(run)
    assert peak == 2 * MB and out.sum() == MB // 2
