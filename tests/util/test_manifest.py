import json
import os
import time
from pathlib import Path

from charframe.util.manifest import Manifest, Status, digest_params


def test_status_cycle_missing_uptodate_stale_foreign(tmp_path: Path) -> None:
    src = tmp_path / "in.png"
    src.write_bytes(b"source")
    out = tmp_path / "out.txt"
    m = Manifest.load(tmp_path / ".m.json")
    assert m.status("out.txt", inputs=[src], params={"a": 1}) is Status.MISSING
    out.write_bytes(b"result")
    assert m.status("out.txt", inputs=[src], params={"a": 1}) is Status.FOREIGN  # not recorded
    m.record("out.txt", inputs=[src], params={"a": 1})
    assert m.save() and not m.save()  # written once, then nothing to do
    m = Manifest.load(tmp_path / ".m.json")
    assert m.up_to_date("out.txt", inputs=[src], params={"a": 1})
    assert m.status("out.txt", inputs=[src], params={"a": 2}) is Status.STALE  # parameters changed
    assert m.status("out.txt", inputs=[], params={"a": 1}) is Status.STALE  # other inputs
    src.write_bytes(b"source2")
    assert m.status("out.txt", inputs=[src], params={"a": 1}) is Status.STALE  # input content changed
    src.write_bytes(b"source")
    assert m.up_to_date("out.txt", inputs=[src], params={"a": 1})  # same bytes again: up to date
    out.write_bytes(b"hand edit")
    assert m.status("out.txt", inputs=[src], params={"a": 1}) is Status.FOREIGN
    out.unlink()
    m.forget_missing()
    assert m.outputs == {}


def test_touched_file_with_same_bytes_is_up_to_date_and_stat_refreshed(tmp_path: Path) -> None:
    (tmp_path / "o").write_bytes(b"x")
    m = Manifest(tmp_path / ".m.json")
    m.record("o", data=b"x")
    m.save()
    os.utime(tmp_path / "o", ns=(5, 5))
    m = Manifest.load(tmp_path / ".m.json")
    assert m.holds("o", b"x") and not m.holds("o", b"y")
    assert m.dirty and m.outputs["o"]["file"][1] == 5  # the new mtime is remembered: next time no read
    m.save()
    assert json.loads((tmp_path / ".m.json").read_text())["outputs"]["o"]["file"][1] == 5


def test_unreadable_manifest_counts_as_empty(tmp_path: Path) -> None:
    (tmp_path / ".m.json").write_bytes(b"\xff{ not json")
    (tmp_path / "o").write_bytes(b"x")
    assert Manifest.load(tmp_path / ".m.json").status("o") is Status.FOREIGN


def test_version_2_caption_manifest_is_read_as_stale(tmp_path: Path) -> None:
    from charframe.util.manifest import digest_bytes

    (tmp_path / "f00.txt").write_bytes(b"krnk")
    st = (tmp_path / "f00.txt").stat()
    legacy = {"version": 2, "captions": {"f00.txt": [digest_bytes(b"krnk"), st.st_size, st.st_mtime_ns]}}
    (tmp_path / ".m.json").write_text(json.dumps(legacy))
    assert Manifest.load(tmp_path / ".m.json").status("f00.txt", params="krnk") is Status.STALE  # ours, compared once


def test_params_digest_includes_charframe_version(monkeypatch) -> None:
    from charframe.util import manifest

    before = digest_params({"a": 1})
    assert digest_params({"a": 1}) == before and digest_params({"a": 2}) != before
    caption = digest_params("krnk girl")
    monkeypatch.setattr(manifest, "__version__", "999")
    assert digest_params({"a": 1}) != before
    assert digest_params("krnk girl") != caption


def test_caption_digest_is_version_nul_text_and_never_a_json_digest() -> None:
    """Captions (str parameters) are digested without the JSON encoder: distinct texts stay distinct, and a
    str never digests like a list or dict whose JSON happens to read the same."""
    from charframe import __version__
    from charframe.util.manifest import digest_bytes

    texts = ["krnk girl, 'ribbon'", "", 'quote " back\\slash', "ünï\u2028code\n", "\x00", "\ud800"]
    digests = {digest_params(t) for t in texts}
    assert len(digests) == len(texts)
    assert digest_params("krnk girl") == digest_bytes(f"{__version__}\0krnk girl".encode())
    assert digest_params(["krnk girl"]) != digest_params("krnk girl")
    assert digest_params('["x"]') != digest_params(["x"])


def test_nothing_to_do_for_50_characters_x_40_images_under_a_second(tmp_path: Path) -> None:
    """The pipeline's `rerun --all` budget: 2000 outputs, each with its input, all up to date."""
    manifests = []
    for c in range(50):
        folder = tmp_path / f"c{c}"
        folder.mkdir()
        m = Manifest(folder / ".m.json")
        for i in range(40):
            (folder / f"{i}.png").write_bytes(b"img%d" % i)
            (folder / f"{i}.txt").write_bytes(b"cap%d" % i)
            m.record(f"{i}.txt", inputs=[folder / f"{i}.png"], params={"rules": "r", "i": i})
        m.save()
        manifests.append(folder)
    start = time.perf_counter()
    stale = 0
    for folder in manifests:
        m = Manifest.load(folder / ".m.json")
        stale += sum(not m.up_to_date(f"{i}.txt", inputs=[folder / f"{i}.png"], params={"rules": "r", "i": i}) for i in range(40))
    elapsed = time.perf_counter() - start
    assert stale == 0
    assert elapsed < 1.0, f"{elapsed:.2f} s for 2000 checks"


def test_a_safetensors_file_is_identified_by_its_tensors_not_its_metadata(tmp_path) -> None:
    """A LoRA made again from the same inputs (a new provenance time stamp) is the same file; other tensors or a
    truncated file are not."""
    import torch
    from safetensors.torch import save_file

    from charframe.util.manifest import digest_file

    path = tmp_path / "x.safetensors"
    tensors = {"a": torch.arange(6.0).reshape(2, 3)}
    save_file(tensors, str(path), {"charframe_history": "[{\"time\": \"1\"}]"})
    first = digest_file(path)
    save_file(tensors, str(path), {"charframe_history": "[{\"time\": \"2\"}]"})
    assert digest_file(path) == first
    save_file({"a": torch.ones(2, 3)}, str(path), {})
    assert digest_file(path) != first
    path.write_bytes(path.read_bytes()[:40])
    assert digest_file(path) not in (first,)
    (tmp_path / "y.safetensors").write_bytes(b"not a safetensors file at all")
    assert digest_file(tmp_path / "y.safetensors")  # plain bytes then


def test_a_set_entry_by_content_with_touched_files_refreshed(tmp_path, monkeypatch) -> None:
    """Step records: stale on a changed input or output, fresh on a touched-but-identical file, which is then
    remembered so the next check does not read it again."""
    import os

    from charframe.util import manifest as mf

    src, out = tmp_path / "in.txt", tmp_path / "out.txt"
    src.write_text("a")
    out.write_text("b")
    m = mf.Manifest(tmp_path / "rec.json", base=tmp_path)
    m.record_set("s", outputs=[str(out)], inputs=m.fingerprints([str(src)]), params="p")
    m.save()
    check = lambda m: m.set_status("s", outputs=[str(out)], inputs=[str(src)], params="p")  # noqa: E731
    assert check(m) is None
    assert m.outputs["s"]["inputs"] == {"in.txt": [1, os.stat(src).st_mtime_ns, mf.digest_bytes(b"a")]}
    os.utime(src, ns=(1, 1))
    assert check(m) is None and m.dirty
    m.save()
    reads = []
    monkeypatch.setattr(mf, "digest_file", lambda p: reads.append(p) or "x")
    assert check(mf.Manifest.load(tmp_path / "rec.json", base=tmp_path)) is None and reads == []
    monkeypatch.undo()
    src.write_text("c")
    assert check(m) == "input in.txt changed"
    assert m.set_status("s", outputs=[str(out)], inputs=[str(src)], params="q") == "settings changed"
    out.write_text("x")
    src.write_text("a")
    os.utime(src, ns=(1, 1))
    assert check(m) == "output out.txt changed"
    assert m.set_status("s", outputs=[str(out)], inputs=[str(src)], params="p", protect_outputs=True) is None
