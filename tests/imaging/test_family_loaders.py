"""The family loaders share one body (imaging.sam_like.CheckpointSegmenter); where their copies used to word
things differently, these pin the one wording kept."""

from __future__ import annotations

import re

import pytest
import torch

from imaging.errors import CheckpointError


@pytest.mark.parametrize(
    ("module", "name", "family_name"),
    [
        ("imaging.mobile_sam", "MobileSamSegmenter", "MobileSAM"),
        ("imaging.sam_hq", "SamHqSegmenter", "SAM-HQ"),
        ("imaging.sam2", "Sam2Segmenter", "SAM 2"),
    ],
)
def test_a_family_class_refuses_another_familys_checkpoint_naming_both(
    tiny_sam_checkpoint, module, name, family_name
):
    """Every family says "is a <found> checkpoint, not <family's name> (load it with ...)", as SAM's did."""
    segmenter_class = getattr(__import__(module, fromlist=[name]), name)
    expected = (
        f"checkpoint {tiny_sam_checkpoint.name} is a SAM custom checkpoint, not {family_name} "
        "(load it with imaging.families.load_segmenter)"
    )
    with pytest.raises(CheckpointError, match=f"^{re.escape(expected)}$"):
        segmenter_class(tiny_sam_checkpoint)


def test_a_sam_architecture_mismatch_names_the_inferred_size(tmp_path, tiny_sam_checkpoint):
    """As the other families: "the inferred <label> architecture" (SAM's copy said only "SAM")."""
    from imaging.sam import SamSegmenter

    bad = tmp_path / "bad.pth"
    torch.save(
        torch.load(tiny_sam_checkpoint, weights_only=True)
        | {"mask_decoder.iou_token.weight": torch.zeros(1, 8)},
        bad,
    )
    with pytest.raises(CheckpointError, match="does not match the inferred SAM custom architecture: "):
        SamSegmenter(bad)


def test_repr_names_the_model_by_its_label(tiny_sam, tiny_sam_checkpoint):
    assert repr(tiny_sam) == f"SamSegmenter({tiny_sam_checkpoint.name!r}, model=SAM custom, device=cpu)"


def test_fingerprints_keep_their_published_form(tiny_sam, tiny_sam_checkpoint):
    """The fingerprint keys the embedding cache: its one home (families.segmenter_fingerprint) must keep
    the form the segmenters and the registry each built before."""
    from imaging.families import FamilyInfo, Sam2Config, segmenter_fingerprint
    from imaging.sam import checkpoint_fingerprint

    assert tiny_sam.fingerprint == f"sam-v1-fp16:custom:{checkpoint_fingerprint(tiny_sam_checkpoint)}"
    sam2 = FamilyInfo("sam2", "hiera_tiny", "SAM 2.1 hiera_tiny", Sam2Config("2.1", "hiera_tiny", "x.yaml"))
    assert segmenter_fingerprint(sam2, "d") == "sam2-v1-fp16:sam2.1:hiera_tiny:d"
    assert (
        segmenter_fingerprint(FamilyInfo("sam_hq", "vit_b", "", None), "d") == "samhq-v1-fp16:sam_hq:vit_b:d"
    )
    assert (
        segmenter_fingerprint(FamilyInfo("mobile_sam", "vit_t", "", None), "d")
        == "mobilesam-v1-fp16:mobile_sam:vit_t:d"
    )
