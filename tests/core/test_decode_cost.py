"""Decoding cost bounded before decoding, in the one image reader (core/preprocess.py) every path uses:
files whose decoding costs far more than their pixels (a progressive JPEG of hundreds of scans, a PNG of
many empty chunks) are refused from a scan of their bytes in well under a second, naming the limit and
the fix; ordinary pictures still read; decoding that runs past its time limit is stopped."""

from __future__ import annotations

import io
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from dnc.core import preprocess
from dnc.core.images import DataError, read_image_array, read_picture

FAST = 1.0  # seconds: a refusal comes before any pixel is decoded


def _jpeg(size=(64, 48), **kw) -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(buf, "JPEG", **kw)
    return buf.getvalue()


def _many_scans(n: int, size=(512, 512)) -> bytes:
    """A progressive JPEG of a smooth picture whose shortest scan is repeated until it has `n` scans (a few
    dozen bytes each; libjpeg decodes it, only warning): the shape of the 0.7 MB file that held the server
    for 58 s."""
    ramp = (np.add.outer(np.arange(size[1]), np.arange(size[0])) % 256).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(np.stack([ramp] * 3, -1)).save(buf, "JPEG", progressive=True)
    data = buf.getvalue()
    starts = [i for i in range(len(data) - 1) if data[i:i + 2] == b"\xff\xda"] + [len(data) - 2]
    scans = [data[a:b] for a, b in zip(starts, starts[1:], strict=False)]
    return data[:-2] + min(scans[1:], key=len) * (n - len(scans)) + data[-2:]


def _segments(n: int, length: int = 2, marker: bytes = b"\xff\xfe") -> bytes:
    """A baseline JPEG with `n` extra segments (COM by default) of `length` (including the length field)."""
    data = _jpeg()
    seg = marker + struct.pack(">H", length) + b"x" * (length - 2)
    return data[:2] + seg * n + data[2:]


def _chunk(kind: bytes, body: bytes = b"") -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png(w=1, h=1, extra: list[bytes] = (), idat_pieces: int = 1) -> bytes:
    """A gray PNG with `extra` chunks before its pixels, the compressed pixels split in `idat_pieces` IDATs."""
    raw = b"".join(b"\x00" + bytes((x * 7 + y) % 256 for x in range(w)) for y in range(h))
    z = zlib.compress(raw)
    step = -(-len(z) // idat_pieces)
    idats = [_chunk(b"IDAT", z[i:i + step]) for i in range(0, len(z), step)]
    idats += [_chunk(b"IDAT") for _ in range(idat_pieces - len(idats))]
    ihdr = _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
    return preprocess.PNG_SIGNATURE + ihdr + b"".join(extra) + b"".join(idats) + _chunk(b"IEND")


HOSTILE = {
    "progressive JPEG of 600 scans": (lambda: _many_scans(600), "100 scans"),
    "JPEG of 5,000 comment segments": (lambda: _segments(5000), "1000 segments"),
    "JPEG of 9 MB metadata": (lambda: _segments(150, 65535, b"\xff\xe1"), "8 MB"),
    "1x1 PNG of 200,000 empty private chunks": (lambda: _png(extra=[_chunk(b"prVt")] * 200_000), "1000 chunks"),
    "1x1 PNG of 200,000 empty tEXt chunks": (lambda: _png(extra=[_chunk(b"tEXt")] * 200_000), "1000 chunks"),
    "1x1 PNG of 200,000 IDAT chunks": (lambda: _png(idat_pieces=200_000), "1001 IDAT chunks"),
    "1x1 PNG of 9 MB text": (lambda: _png(extra=[_chunk(b"tEXt", b"k\x00" + b"v" * 2**20)] * 9), "8 MB"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_costly_files_refused_fast_on_every_path(name, tmp_path):
    make, limit = HOSTILE[name]
    data = make()
    path = tmp_path / ("bad.png" if data[:4] == b"\x89PNG" else "bad.jpg")
    path.write_bytes(data)
    calls = [(DataError, lambda: read_picture(path, "RGB")),
             (DataError, lambda: read_image_array(path, 3, 32)),
             (preprocess.ImageError, lambda: preprocess.decode(data, 2**24, "picture 0 of the request"))]
    for error, call in calls:
        start = time.perf_counter()
        with pytest.raises(error) as e:
            call()
        took = time.perf_counter() - start
        assert took < FAST, f"{name}: refused after {took:.2f} s"
        message = str(e.value)
        assert limit in message and "re-encode it as a baseline JPEG or a plain PNG" in message, message
        assert "bad." in message or "picture 0" in message, message


def test_many_scans_are_what_costs():
    """The refused file is a real one: with the scan turned off, PIL decodes it (libjpeg only warns)."""
    data = _many_scans(150, size=(64, 64))
    assert len(data) < 20_000
    preprocess.check_cost(data[:data.index(b"\xff\xda")] + data[-2:])  # its header alone passes
    im = Image.open(io.BytesIO(data))
    im.load()
    assert im.size == (64, 64)


@pytest.mark.parametrize("kind", ["baseline JPEG", "progressive JPEG", "JPEG with EXIF and ICC",
                                  "PNG with a few chunks", "PNG of one IDAT per row", "large PNG", "large JPEG"])
def test_ordinary_files_still_read(kind, tmp_path):
    rng = np.random.default_rng(1)
    if kind == "baseline JPEG":
        data, size = _jpeg((300, 200)), (300, 200)
    elif kind == "progressive JPEG":
        data, size = _jpeg((300, 200), progressive=True), (300, 200)
    elif kind == "JPEG with EXIF and ICC":
        exif = Image.Exif()
        exif[0x0112] = 1
        data, size = _jpeg((300, 200), exif=exif.tobytes(), icc_profile=b"\x00" * 200_000, progressive=True), (300, 200)
    elif kind == "PNG with a few chunks":
        few = [_chunk(b"tEXt", b"Comment\x00hi"), _chunk(b"gAMA", struct.pack(">I", 45455))]
        data, size = _png(40, 30, few), (40, 30)
    elif kind == "PNG of one IDAT per row":
        data, size = _png(500, 3000, idat_pieces=3000), (500, 3000)
    elif kind == "large PNG":  # PIL writes 64 KB IDAT chunks: hundreds of them
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (2000, 3000, 3), dtype=np.uint8)).save(buf, "PNG", compress_level=1)
        data, size = buf.getvalue(), (3000, 2000)
    else:
        data, size = _jpeg((4000, 3000), progressive=True, quality=95), (4000, 3000)
    path = tmp_path / ("ok.png" if "PNG" in kind else "ok.jpg")
    path.write_bytes(data)
    start = time.perf_counter()
    assert read_picture(path, "RGB").shape == (size[1], size[0], 3)
    assert read_image_array(path, 3, 32).shape == (3, 32, 32)
    assert preprocess.decode(data, 50_000_000).size == size
    assert time.perf_counter() - start < 20


def test_decoding_past_its_time_limit_is_stopped(tmp_path, monkeypatch):
    """The clock is read between blocks handed to the decoder: a decode past DECODE_SECONDS is refused."""
    data = _jpeg((2000, 1500), progressive=True)
    path = tmp_path / "slow.jpg"
    path.write_bytes(data)
    monkeypatch.setattr(preprocess, "DECODE_SECONDS", -1.0)
    with pytest.raises(preprocess.ImageError, match="picture 3: decoding took more than .* s.*re-encode"):
        preprocess.decode(data, 2**24, "picture 3")
    with pytest.raises(DataError, match="slow.jpg: decoding took more than"):
        read_picture(path, "RGB")


def test_folder_scan_refuses_a_costly_file_before_pil_walks_it(tmp_path):
    """scan_image_folder's check that each file decodes (PIL's verify walks every PNG chunk) scans first."""
    from dnc.core.images import scan_image_folder

    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        (tmp_path / c / "ok.png").write_bytes(_png(8, 8))
    (tmp_path / "a" / "bad.png").write_bytes(_png(extra=[_chunk(b"prVt")] * 200_000))
    start = time.perf_counter()
    with pytest.raises(DataError, match="bad.png is a PNG of more than 1000 chunks.*plain PNG"):
        scan_image_folder(tmp_path, on_bad="error")
    _, paths, _ = scan_image_folder(tmp_path)
    assert time.perf_counter() - start < 2 * FAST
    assert sorted(p.rsplit("/", 2)[-2] for p in paths) == ["a", "b"]


def test_the_servers_copy_refuses_them_alone():
    """The prep step loads its copy of core/preprocess.py by itself (`dnc repo build` copies the file beside
    the prep step's model.py, with nothing of the project): loaded alone, it holds the scan and the time
    limit."""
    import importlib.util
    from pathlib import Path

    from dnc.core import preprocess

    copy = Path(preprocess.__file__)
    spec = importlib.util.spec_from_file_location("dnc_preprocess_copy", copy)
    served = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(served)
    for name, (make, limit) in HOSTILE.items():
        data = make()
        start = time.perf_counter()
        with pytest.raises(served.ImageError, match=f"picture 1 .*{limit}"):
            served.load(served.open_header(data, 2**24, "picture 1"), "picture 1")
        assert time.perf_counter() - start < FAST, name
    assert served.decode(_jpeg((300, 200), progressive=True), 2**24).size == (300, 200)


@pytest.mark.triton
@pytest.mark.slow
def test_the_real_server_refuses_them_fast_and_stays_up(tmp_path, exported):
    """Sent as `encoded` bytes to tritonserver: each costly file gets an error naming the limit in under a
    second (the 0.7 MB progressive JPEG of many scans held the prep step for 58 s before), then an ordinary
    picture is answered."""
    import tritonclient.http as http
    from tritonclient.utils import InferenceServerException

    from dnc.core import formats as F
    from dnc.serving import repository
    from dnc.serving.server import TritonServer

    repo = tmp_path / "repo"
    repository.build(exported[0], repo, top_k=3, threads=1)
    server = TritonServer(repo, 0, 0, 0)
    server.start(timeout=180)
    try:
        client = http.InferenceServerClient(server.http_url)

        def send(data: bytes):
            inp = http.InferInput(F.ENCODED, [1, 1], "BYTES")
            inp.set_data_from_numpy(np.array([[data]], dtype=object), binary_data=True)
            return client.infer(F.ENTRY_MODEL, [inp])

        for name, (make, limit) in HOSTILE.items():
            data = make()
            start = time.perf_counter()
            with pytest.raises(InferenceServerException) as e:
                send(data)
            took = time.perf_counter() - start
            assert took < FAST and limit in str(e.value) and "baseline JPEG" in str(e.value), (name, took, e.value)
            print(f"{name} ({len(data) / 1e6:.2f} MB): refused by the server in {took * 1000:.0f} ms")
        buf = io.BytesIO()
        Image.fromarray(np.zeros((28, 28), np.uint8)).save(buf, "JPEG", progressive=True)
        assert send(buf.getvalue()).as_numpy(F.SCORES).shape[0] == 1 and server.proc.poll() is None
    finally:
        server.stop()


def test_an_animated_png_reads_its_first_frame_however_many_follow(tmp_path):
    """PIL stops at an APNG's second frame, and so does the scan: 1,500 frames are not 1,500 costly chunks;
    the same chunks in a PNG that is not animated are (PIL walks them all)."""
    frames = [Image.fromarray(np.full((8, 8), i % 256, np.uint8)) for i in range(1500)]
    buf = io.BytesIO()
    frames[0].save(buf, "PNG", save_all=True, append_images=frames[1:])
    data = buf.getvalue()
    assert data.count(b"fdAT") > 1000
    path = tmp_path / "many.png"
    path.write_bytes(data)
    assert read_picture(path, "L").shape == (8, 8, 1)
    still = data.replace(b"acTL", b"acTl")  # no longer animated (an unknown private chunk)
    with pytest.raises(preprocess.ImageError, match="1000 chunks"):
        preprocess.check_cost(still)
