"""The summaries' lines: counts, per-frame and per-image times, problems, files written."""
from condseg.inference.sources import VideoInfo
from condseg.inference.summary import ImageSummary, VideoSummary


def test_video_summary_lines():
    s = VideoSummary(VideoInfo("clip.mp4", 12.0, 160, 120, 16), frames=10, batches=5, wall=2.0, decode=0.01,
                     model=1.0, draw=0.2, encode=0.05, overlap=False, complete=False,
                     errors=[{"frame": 3, "message": "clip.mp4: frame 3 could not be decoded (skipped)"}],
                     outputs=["out.mp4"])
    assert s.fps == 5.0 and s.per_frame_ms(s.model) == 100.0
    assert s.lines() == [
        "clip.mp4: 10 frames (160x120, 12 frames/s) in 2.0 s: 5.00 frames/s end to end (sequential pipeline), "
        "STOPPED before the end",
        "  per frame: model 100.0 ms (in 5 calls), decoding 1.0 ms, drawing 20.0 ms, encoding 5.0 ms",
        "  the model alone would run at 10.00 frames/s",
        "  problem: clip.mp4: frame 3 could not be decoded (skipped)",
        "  written: out.mp4",
    ]
    empty = VideoSummary(VideoInfo("webcam 0", 30.0, 640, 480, None))
    assert empty.fps == 0.0 and len(empty.lines()) == 2


def test_image_summary_lines():
    s = ImageSummary(images=4, instances=9, wall=1.0, model=0.2, draw=0.04)
    assert s.lines() == ["4 images in 1.0 s: model 50.0 ms per image, drawing and writing 10.0 ms per image; "
                         "9 instances"]
    assert ImageSummary().lines() == ["0 images in 0.0 s: model 0.0 ms per image, drawing and writing 0.0 ms "
                                      "per image; 0 instances"]
