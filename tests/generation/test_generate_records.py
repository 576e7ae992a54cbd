"""generate_set regenerates exactly the candidates an edit affects (issue 19 point 1): each candidate is recorded
with its prompt, seed, settings and the content of every file it used; nothing is skipped because a file exists,
nothing current is redone, replaced candidates go to LoRAWork/replaced/, and pictures placed by hand stay."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from charframe.character import load_character
from charframe.generation.generate import generate_set
from charframe.testing.tiny_files import save_tiny_sd
from charframe.util.manifest import digest_file
from generation_helpers import make_project
from test_face_lora_hed import tiny_lora

CODES = ["f00", "f12"]


def _raw(root: Path, set_name: str = "face") -> Path:
    return root / "LoRAWork" / "krnk" / set_name / "raw"


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: digest_file(p) for p in sorted(folder.glob("*.png"))}


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_each_edit_regenerates_exactly_the_candidates_it_affects(tmp_path: Path) -> None:
    make_project(tmp_path)
    path = tmp_path / "Characters" / "krnk.toml"
    raw = _raw(tmp_path)

    def regenerate() -> list[str]:
        before = _digests(raw)
        res = generate_set(load_character(path), "f", codes=CODES, progress=False, device="cpu")
        after = _digests(raw)
        changed = sorted(n for n in after if before.get(n) != after[n])
        assert changed == sorted(p.name for p in res.written)  # what it says it wrote is what changed
        return changed

    everything = ["f00-0.png", "f00-1.png", "f12-0.png", "f12-1.png"]
    assert regenerate() == everything
    assert regenerate() == []  # nothing changed: nothing made
    control = tmp_path / "FaceTemplate" / "control" / "softedge" / "f12.png"
    control.write_bytes((tmp_path / "FaceTemplate" / "control" / "depth" / "f12.png").read_bytes())
    assert regenerate() == ["f12-0.png", "f12-1.png"]  # a redrawn map: that code only
    _edit(path, "cat ears", "cat ears, red eyes")
    assert regenerate() == everything  # the prompt
    _edit(path, "seed = 7", "seed = 9")
    assert regenerate() == everything  # the seed
    _edit(path, 'sampler = "Euler a"', 'sampler = "DPM++ 2M Karras"')
    assert regenerate() == everything  # the sampler
    _edit(path, "weight = 0.8", "weight = 0.7")
    assert regenerate() == everything  # the ControlNet's weight
    save_tiny_sd(tmp_path / "LoRAInput" / "tiny", seed=1)
    _edit(path, "[generation]\n", '[generation]\nmodel = "LoRAInput/tiny"\n')
    assert regenerate() == everything  # another model
    (tmp_path / "LoRAInput" / "tiny" / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(
        (save_tiny_sd(tmp_path / "other", seed=2) / "unet" / "diffusion_pytorch_model.safetensors").read_bytes())
    assert regenerate() == everything  # the model file's content
    _edit(path, "candidates = 2", "candidates = 3")
    assert regenerate() == ["f00-2.png", "f12-2.png"]  # one more candidate: only the new ones
    replaced = list((tmp_path / "LoRAWork" / "replaced").glob("*/LoRAWork/krnk/face/raw/f12-0.png"))
    assert len(replaced) == 7  # every replaced picture was moved aside, none deleted


def test_a_new_face_lora_regenerates_every_body_candidate(tmp_path: Path) -> None:
    ch = make_project(tmp_path)
    raw = _raw(tmp_path, "body-sf")
    lora = tiny_lora(tmp_path / "face.safetensors")
    first = generate_set(ch, "b", outfit="sf", codes=["b02"], face_lora=lora, progress=False, device="cpu")
    assert len(first.written) == 2
    assert generate_set(ch, "b", outfit="sf", codes=["b02"], face_lora=lora, progress=False, device="cpu").written == []
    tiny_lora(tmp_path / "face.safetensors", kind="loha")  # retrained: new content, same name
    again = generate_set(ch, "b", outfit="sf", codes=["b02"], face_lora=lora, progress=False, device="cpu")
    assert sorted(p.name for p in again.written) == ["b02-0.png", "b02-1.png"]
    weaker = replace(ch, generation=replace(ch.generation, face_lora_weight=0.5))
    assert len(generate_set(weaker, "b", outfit="sf", codes=["b02"], face_lora=lora, progress=False,
                            device="cpu").written) == 2  # its weight too
    assert list(raw.glob("*.png")) and all(p.name.startswith("b02-") for p in raw.glob("*.png"))


def test_pictures_placed_or_edited_by_hand_are_kept_and_dropped_codes_leave(tmp_path: Path) -> None:
    ch = make_project(tmp_path)
    raw = _raw(tmp_path)
    raw.mkdir(parents=True)
    (raw / "f00-0.png").write_bytes((tmp_path / "FaceTemplate" / "f00.png").read_bytes())  # the user's own picture
    res = generate_set(ch, "f", codes=CODES, progress=False, device="cpu")
    assert [p.name for p in res.kept] == ["f00-0.png"] and len(res.written) == 3
    assert digest_file(raw / "f00-0.png") == digest_file(tmp_path / "FaceTemplate" / "f00.png")
    edited = (raw / "f12-1.png")
    edited.write_bytes((tmp_path / "FaceTemplate" / "f12.png").read_bytes())  # a candidate retouched by hand
    res = generate_set(ch, "f", codes=CODES, progress=False, device="cpu")
    assert res.written == [] and sorted(p.name for p in res.kept) == ["f00-0.png", "f12-1.png"]
    # the whole set without f12's template: its candidates are no longer wanted and leave raw/ (recoverably)
    for p in (tmp_path / "FaceTemplate").rglob("f12.png"):
        p.unlink()
    for p in (tmp_path / "FaceTemplate").rglob("f13.png"):
        p.unlink()
    from charframe.generation import generate as gen

    wanted = [gen.ImageCode("f", 0, 0)]
    real = gen.set_codes
    gen.set_codes = lambda character, kind, codes=None: wanted if codes is None else real(character, kind, codes)
    try:
        res = generate_set(ch, "f", progress=False, device="cpu")
    finally:
        gen.set_codes = real
    assert sorted(p.name for p in raw.glob("*.png")) == ["f00-0.png", "f00-1.png", "f12-1.png"]  # the edit stays
    assert [p.name for p in res.replaced] == ["f12-0.png"]


def test_fewer_candidates_retire_the_rest_but_a_pick_retrys_stay(tmp_path: Path, monkeypatch) -> None:
    """A candidate left from a larger `candidates` is retired by the next whole-set run; one a pick retry made
    (recorded as a retry, with the next seeds) stays while it is current."""
    from charframe.generation import generate as gen

    real = gen.set_codes  # the whole set = the codes the test project has templates for
    monkeypatch.setattr(gen, "set_codes", lambda character, kind, codes=None: real(character, kind, codes or CODES))
    make_project(tmp_path)
    path = tmp_path / "Characters" / "krnk.toml"
    raw = _raw(tmp_path)
    generate_set(load_character(path), "f", progress=False, device="cpu")
    retry = generate_set(load_character(path), "f", codes=["f00"], candidates=1, first=2, progress=False, device="cpu")
    assert [p.name for p in retry.written] == ["f00-2.png"]
    _edit(path, "candidates = 2", "candidates = 1")
    res = generate_set(load_character(path), "f", progress=False, device="cpu")
    names = {p.name for p in raw.glob("*.png")}
    assert res.written == [] and {"f00-0.png", "f00-2.png"} <= names
    assert not {n for n in names if n.endswith("-1.png")}  # every candidate #1 retired
    assert any(p.name == "f00-1.png" for p in (tmp_path / "LoRAWork" / "replaced").rglob("*.png"))
