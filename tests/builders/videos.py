"""Small generated videos for the video tests, including broken ones."""
from condseg.data.shapes_video import write_shapes_video


def shapes_video(path: str, frames: int = 12, width: int = 128, height: int = 96, fps: float = 12.0) -> str:
    write_shapes_video(path, frames, width, height, fps, seed=3)
    return path


def corrupt_mjpeg_frame(src: str, dst: str, index: int) -> None:
    """Copy an MJPG .avi with frame ``index``'s JPEG data zeroed (its decoder then finds no
    image in it, while the container stays intact)."""
    data = bytearray(open(src, "rb").read())
    soi = [i for i in range(len(data) - 2) if data[i] == 0xFF and data[i + 1] == 0xD8 and data[i + 2] == 0xFF]
    for j in range(soi[index], soi[index + 1] - 8):  # keep the next chunk's header
        data[j] = 0
    open(dst, "wb").write(bytes(data))


def truncate(src: str, dst: str, fraction: float = 0.5) -> None:
    data = open(src, "rb").read()
    open(dst, "wb").write(data[: int(len(data) * fraction)])
