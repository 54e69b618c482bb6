"""Dataset mapper: detectron2's, choosing the mask format per image.

detectron2's mapper needs one ``INPUT.MASK_FORMAT`` for a whole dataset, and polygon
format cannot hold RLE masks. Real COCO-format data mixes both (crowd-free RLE masks,
converted annotations), and the built-in dataset stores RLE. This mapper keeps polygons
as polygons when an image has only polygons, and switches that image to bitmasks when
any of its masks is RLE; the models accept both. Box-only annotations (no
``segmentation``) train detectors and are skipped when masks are trained.
"""
from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils

__all__ = ["CondsegDatasetMapper", "UnreadableImage"]


class UnreadableImage(Exception):
    """An image file that cannot be opened or decoded (missing, not an image, truncated)."""

    def __init__(self, file_name: str, reason: str):
        super().__init__(f"{file_name}: {reason}")
        self.file_name, self.reason = file_name, reason

    def __reduce__(self):  # raised in data-loader workers, re-raised in the main process
        return (UnreadableImage, (self.file_name, self.reason))


class CondsegDatasetMapper(DatasetMapper):
    def __call__(self, dataset_dict):
        """detectron2's mapping; an image that cannot be read raises :class:`UnreadableImage`."""
        try:
            return super().__call__(dataset_dict)
        except OSError as e:  # FileNotFoundError, PIL's UnidentifiedImageError, "image file is truncated"
            raise UnreadableImage(dataset_dict.get("file_name", "?"), f"{type(e).__name__}: {e}") from e

    def _transform_annotations(self, dataset_dict, transforms, image_shape):
        mask_format = self.instance_mask_format
        if self.use_instance_mask and any(
            isinstance(a.get("segmentation"), dict) for a in dataset_dict.get("annotations", [])
        ):
            mask_format = "bitmask"
        if self.use_instance_mask:  # box-only (detection) annotations cannot supervise masks
            dataset_dict["annotations"] = [a for a in dataset_dict["annotations"] if "segmentation" in a]
        for anno in dataset_dict["annotations"]:
            if not self.use_instance_mask:
                anno.pop("segmentation", None)
            if not self.use_keypoint:
                anno.pop("keypoints", None)
        annos = [
            utils.transform_instance_annotations(
                obj, transforms, image_shape, keypoint_hflip_indices=self.keypoint_hflip_indices
            )
            for obj in dataset_dict.pop("annotations")
            if not obj.get("iscrowd", 0)
        ]
        instances = utils.annotations_to_instances(annos, image_shape, mask_format=mask_format)
        if self.recompute_boxes:
            instances.gt_boxes = instances.gt_masks.get_bounding_boxes()
        dataset_dict["instances"] = utils.filter_empty_instances(instances)
