from setuptools import find_packages, setup

setup(
    name="condseg",
    version="0.1.0",
    description="CondInst instance segmentation on FCOS, with ODConv / DCNv2 backbones, as a Detectron2 project",
    packages=find_packages(include=["condseg", "condseg.*"]),
    python_requires=">=3.10",
    # torch, torchvision and detectron2 are installed by `make setup` (see README):
    # none of them installs correctly from a plain dependency list.
    install_requires=["numpy", "opencv-python", "pycocotools", "tqdm"],
)
