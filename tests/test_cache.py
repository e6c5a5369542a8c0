import torch

from ppp.cache import Cache, content_key


def test_key_is_stable_and_sensitive():
    assert content_key({"a": 1, "b": [1, 2]}) == content_key({"b": [1, 2], "a": 1})
    assert content_key({"a": 1}) != content_key({"a": 2})


def test_hit_miss_and_corrupt(tmp_path, capsys):
    cache = Cache(tmp_path)
    calls = []

    def build():
        calls.append(1)
        return {"w": torch.arange(4.0)}

    payload, hit = cache.get_or_build("models", "k1", build)
    assert not hit and len(calls) == 1
    payload, hit = cache.get_or_build("models", "k1", build)
    assert hit and len(calls) == 1 and torch.equal(payload["w"], torch.arange(4.0))
    assert "reusing" in capsys.readouterr().out

    path = cache.path("models", "k1")
    path.write_bytes(path.read_bytes()[:-10])  # truncated (a killed write, a bad copy)
    payload, hit = cache.get_or_build("models", "k1", build)
    assert not hit and len(calls) == 2 and torch.equal(payload["w"], torch.arange(4.0))

    path.with_suffix(".sha256").unlink()  # partial: payload without its checksum
    assert cache.load("models", "k1") is None and not path.exists()


def test_no_temporary_files_left(tmp_path):
    cache = Cache(tmp_path)
    cache.save("fisher", "abc", {"x": torch.ones(3)})
    assert sorted(p.name for p in (tmp_path / "fisher").iterdir()) == ["abc.pt", "abc.sha256"]
