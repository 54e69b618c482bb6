"""Builders of test data the tests of several folders share: a quirky COCO json, a tiny
CondInst checkpoint with known masks, small videos (``tests/`` is on the import path as
the folder of the top ``conftest.py``)."""
